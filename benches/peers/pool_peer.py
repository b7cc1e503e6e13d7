"""The in-process pool (the `replpool` Python package) for the benchmark, timed end to end as
a Python caller sees it (the call, the GIL released while waiting, the reply built as an
`Execution`).

    python pool_peer.py exec N        warm `1+1` in a session    -> {"samples_s": [...]}
    python pool_peer.py ready N WARM  session + first `1+1` with Pool(warm_workers=WARM), in N
                                      rounds: N * WARM within the warm size, N beyond it
                                      -> {"within_s": [...], "beyond_s": [...]}
"""

import json
import os
import sys
import time

import replpool

IDLE_WINDOW_S = 0.25
FULL_TIMEOUT_S = 120


def execute(n):
    with replpool.Pool(warm_workers=1) as pool, pool.session() as session:
        for _ in range(20):  # warm-up, as the server's own workload does
            session.execute("1+1")
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            reply = session.execute("1+1")
            samples.append(time.perf_counter() - started)
            if reply.text != "2":
                raise RuntimeError(f"unexpected reply: {reply}")
        return {"samples_s": samples}


def ready(rounds, warm):
    """Rounds of warm + 1 sessions made one after the other and kept open, each round from a
    full pool: the first `warm` take a ready worker, the last finds none and waits for one
    made for it. Only one beyond the warm size per round: a second would often get a worker
    the pool's refill finished meanwhile, which is neither case."""
    within, beyond = [], []
    with replpool.Pool(warm_workers=warm) as pool:
        for _ in range(rounds):
            wait_until_full(warm)
            sessions = []
            try:
                for i in range(warm + 1):
                    started = time.perf_counter()
                    session = pool.session()
                    sessions.append(session)
                    reply = session.execute("1+1")
                    elapsed = time.perf_counter() - started
                    if reply.text != "2":
                        raise RuntimeError(f"unexpected reply: {reply}")
                    (within if i < warm else beyond).append(elapsed)
            finally:
                for session in sessions:
                    session.close()
            progress(len(beyond), rounds)
    return {"within_s": within, "beyond_s": beyond, "warm_workers": warm}


def wait_until_full(warm):
    """The package tells no pool level, so it is read from /proc: every process the pool runs
    is a descendant of this one (its workers, and a template if it has one), and a worker that
    is still starting is busy importing the preload. The pool is full when at least `warm`
    descendants live and none of them used CPU for IDLE_WINDOW_S."""
    deadline = time.monotonic() + FULL_TIMEOUT_S
    before = descendants_cpu()
    while time.monotonic() < deadline:
        time.sleep(IDLE_WINDOW_S)
        after = descendants_cpu()
        if len(after) >= warm and after == before:
            return
        before = after
    raise RuntimeError(f"the pool did not fill within {FULL_TIMEOUT_S} s")


def descendants_cpu():
    """{pid: utime + stime} of this process's living descendants."""
    parent_of, stats = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # Fields after the command name, which may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        parent_of[int(entry)] = int(fields[1])
        stats[int(entry)] = int(fields[11]) + int(fields[12])
    ours, me = {}, os.getpid()
    for pid in stats:
        ancestor = parent_of.get(pid)
        while ancestor is not None and ancestor != me:
            ancestor = parent_of.get(ancestor)
        if ancestor == me:
            ours[pid] = stats[pid]
    return ours


def progress(done, total):
    print(f"    pool: {min(done, total)}/{total}", file=sys.stderr, flush=True)


def main(argv):
    if argv[:1] == ["exec"] and len(argv) == 2:
        result = execute(int(argv[1]))
    elif argv[:1] == ["ready"] and len(argv) == 3:
        result = ready(int(argv[1]), int(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
