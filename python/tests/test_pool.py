"""The in-process pool: real workers started from this interpreter, no server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import replpool

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def eventually_dead(pids, within=10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def worker_children() -> list[int]:
    """This process's descendants running worker.py (the pool's workers, started directly or
    forked from its template, and the template)."""
    me = os.getpid()
    found, parents, cmdlines = [], {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        parents[int(name)], cmdlines[int(name)] = ppid, cmdline
    for pid, cmdline in cmdlines.items():
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor != me:
            ancestor = parents.get(ancestor)
        if ancestor == me and b"worker.py" in cmdline and alive(pid):
            found.append(pid)
    return found


def test_state_persists_across_executions(pool):
    with pool.session() as s:
        assert s.execute("x = 41").ok
        r = s.execute("x + 1")
        assert (r.status, r.text, r.execution_count, r.mode) == ("ok", "42", 2, "warm")
        r = s.execute("print('hi'); import sys; print('err', file=sys.stderr)")
        assert (r.stdout, r.stderr) == ("hi\n", "err\n")


def test_sessions_are_isolated(pool):
    with pool.session() as a, pool.session() as b:
        a.execute("secret = 1")
        r = b.execute("secret")
        assert r.status == "error"
        assert r.error["ename"] == "NameError"


def test_errors_say_what_kind_and_sessions_what_they_used(pool):
    with pool.session() as s:
        r = s.execute("x = (")
        assert (r.status, r.category, r.error["ename"]) == ("error", "syntax", "SyntaxError")
        r = s.execute("1 / 0")
        assert (r.status, r.category) == ("error", "runtime")
        r = s.execute("sum(i * i for i in range(10**6))")
        assert (r.status, r.category) == ("ok", None)
        assert r.cpu_ms > 0
        info = s.info()
        assert info["session_id"] == s.id
        assert info["executions"] == 3
        assert info["cpu_seconds"] > 0
        assert info["memory_peak_bytes"] > 0


def test_a_plot_comes_back_as_png(pool):
    with pool.session() as s:
        r = s.execute("plt.plot([1, 4, 9]); plt.title('squares')")
        images = r.images()
        assert len(images) == 1
        assert images[0].startswith(PNG_MAGIC)


def test_tables_and_charts_come_back_as_data_beside_pictures(pool):
    with pool.session() as s:
        r = s.execute("plt.bar(['a', 'b'], [1, 2]); pd.DataFrame({'x': [1, 2]})")
        table = r.result["application/vnd.dataresource+json"]
        assert table["data"] == [{"index": 0, "x": 1}, {"index": 1, "x": 2}]
        assert table["truncated"] is False
        chart = r.display[0]["application/vnd.replpool.chart+json"]
        assert chart["charts"][0]["type"] == "bar"
        assert [e["label"] for e in chart["charts"][0]["elements"]] == ["a", "b"]
        assert r.images()[0].startswith(PNG_MAGIC)


def test_a_timeout_leaves_the_session_usable(pool):
    with pool.session() as s:
        s.execute("kept = 'yes'")
        r = s.execute("import time\ntime.sleep(30)", timeout=0.5)
        assert r.status == "timeout"
        assert r.error["ename"] == "KeyboardInterrupt"
        assert s.execute("kept").text == "'yes'"
        with pytest.raises(replpool.Timeout):
            s.execute("time.sleep(30)", timeout=0.3, raise_on_timeout=True)


def test_files_go_in_and_out(pool):
    with pool.session() as s:
        s.upload("data.csv", "a,b\n1,2\n3,4\n")
        assert s.execute("pd.read_csv('data.csv').b.sum()").text == "np.int64(6)"
        s.execute("open('out.txt', 'w').write('made here')")
        assert s.download("out.txt") == b"made here"
        with pytest.raises(replpool.ServerError):
            s.download("../escape")


def test_an_ended_session_is_not_found(pool):
    s = pool.session()
    s.close()
    with pytest.raises(replpool.SessionNotFound):
        s.execute("1")


def test_reset_and_interrupt(pool):
    with pool.session() as s:
        s.execute("x = 1")
        s.reset()
        assert s.execute("x").error["ename"] == "NameError"
        assert s.interrupt() is False  # nothing runs


def test_aexecute_from_eight_tasks_on_eight_sessions(pool):
    sessions = [pool.session() for _ in range(8)]
    try:

        async def main():
            return await asyncio.gather(*(s.aexecute(f"import time; time.sleep(0.2); {i} * 2") for i, s in enumerate(sessions)))

        replies = asyncio.run(main())
        assert [r.status for r in replies] == ["ok"] * 8
        assert [r.text for r in replies] == [str(i * 2) for i in range(8)]
    finally:
        for s in sessions:
            s.close()


def test_the_gil_is_released_while_waiting(pool):
    with pool.session() as s:
        count = 0
        stop = threading.Event()

        def counter():
            nonlocal count
            while not stop.is_set():
                count += 1

        thread = threading.Thread(target=counter)
        thread.start()
        try:
            before = count
            r = s.execute("import time; time.sleep(1)")
            during = count - before
        finally:
            stop.set()
            thread.join()
        assert r.ok
        # Holding the GIL for the second would leave the counter where it was (a few switches
        # at most); released, it counts millions.
        assert during > 100_000, during


def test_a_pool_out_of_scope_leaves_no_worker():
    # In a process of its own, so that the only workers there are this pool's.
    program = (
        "import gc, json, os, sys, replpool\n"
        "from test_pool import worker_children\n"
        "def use():\n"
        "    pool = replpool.Pool(warm_workers=1)\n"
        "    s = pool.session()\n"
        "    s.execute('1 + 1')\n"
        "    return worker_children()\n"
        "workers = use()\n"
        "gc.collect()\n"
        "print(json.dumps(workers), flush=True)\n"
        "sys.stdin.readline()\n"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.Popen(
        [sys.executable, "-c", program],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": here},
    )
    try:
        workers = json.loads(child.stdout.readline())
        assert len(workers) >= 2, workers  # the session's and the pool's spare
        assert eventually_dead(workers), [p for p in workers if alive(p)]
        assert child.poll() is None, "the pool's process itself is still running"
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("ending", ["exit", "kill"])
def test_the_python_process_ending_leaves_no_worker(ending):
    program = (
        "import os, sys, replpool\n"
        "pool = replpool.Pool(warm_workers=1)\n"
        "s = pool.session()\n"
        "print(s.execute('import os; os.getpid()').text, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(child.stdout.readline())
        assert alive(pid)
        if ending == "exit":
            child.stdin.write("\n")
            child.stdin.flush()
        else:
            child.kill()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert eventually_dead([pid]), f"worker {pid} outlived its Python process"


def descendants(skip: set[int] = frozenset()) -> set[int]:
    """Every living process below this one, not looking below those in `skip` (another pool's
    processes, which may start workers meanwhile)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    below, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier - skip and p not in below}
        below |= frontier
    return {p for p in below if alive(p)}


def test_sessions_beyond_the_warm_ones_are_forked_from_the_template():
    before = descendants()
    pool = replpool.Pool(warm_workers=1)
    try:
        sessions = [pool.session() for _ in range(3)]
        parents = []
        for n, s in enumerate(sessions):
            r = s.execute(f"import os\nx = {n}\nos.getppid()")
            assert r.ok, r
            assert s.execute("x").text == str(n)
            parents.append(int(r.text))
        # Workers started directly are this process's children; forked ones the template's,
        # itself a worker.py child of this process.
        templates = [p for p in set(parents) if p != os.getpid()]
        assert templates, f"no session was forked from the template: parents {parents}"
        for t in templates:
            with open(f"/proc/{t}/cmdline", "rb") as f:
                assert b"worker.py" in f.read()
        assert sum(p != os.getpid() for p in parents) >= 2, parents
        for s in sessions:
            s.close()
    finally:
        pool.close()
    left = descendants(skip=before) - before
    assert eventually_dead(left), f"processes of the pool outlived it: {sorted(left)}"


def test_a_detached_process_of_a_forked_session_does_not_outlive_it():
    pool = replpool.Pool(warm_workers=0)
    try:
        with pool.session() as s:
            r = s.execute(
                "import os, subprocess\n"
                "p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
                "(os.getppid(), p.pid)"
            )
            assert r.ok, r
            parent, detached = (int(x) for x in r.text.strip("()").split(","))
            assert parent != os.getpid(), "the session was not forked from the template"
            assert alive(detached)
        # The pool still runs: the template, not its end, ends what the session detached.
        assert eventually_dead([detached]), "the detached process outlived its session"
    finally:
        pool.close()
