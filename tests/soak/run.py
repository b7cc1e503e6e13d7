#!/usr/bin/env python3
"""`make soak`: 64 concurrent clients against one release server for SOAK_SECS (default 600).

Starts target/release/replpool (built by the Makefile's `build`; this script builds nothing)
with a configuration of its own (target/soak/: its state directory, its log), on a loopback
port the server picks, and runs a mixed workload through the native API: cells with output,
DataFrames, plots, errors, timeouts, files up and down, session create/delete churn, one-shots,
now and then a worker crash (`os._exit`) and a memory hog. Every reply is checked against the
reply docs/architecture.md documents for what was sent (status code, status, ename/evalue,
error code, stdout, execution_count, session_reset, and `category` where the server sends
categories); anything else is counted as unexpected, and its first examples printed.

Every 10 s it samples the server: RSS (/proc/<pid>/status VmRSS), open fds (/proc/<pid>/fd),
processes (the server's descendants: template, workers, watcher) and the p99 latency of the
requests that ended in the last 10 s, one progress line each. After the run every session is
deleted, the pools refill, and the process and fd counts must come back to the idle baseline
taken after the warm-up round; RSS and fds under load must grow less than 10% after warm-up.
Then the server is stopped (SIGTERM, by pid) and nothing of it may be left: no process of its
tree, no cgroup, no state directory.

Writes docs/soak.md (from the run alone: run it again and it is replaced) and docs/soak.png
(RSS, fds, processes and p99 over time; matplotlib, Agg). Exit status 0 when the run passed.

Environment: SOAK_SECS (600), SOAK_CLIENTS (64), SOAK_THINK_MS (mean pause of a client
between two operations, 1000), SOAK_SEED (20), SOAK_DOCS (where soak.md/soak.png go, docs/).
Standard library, and matplotlib (in .venv) for the chart.
"""

import base64
import collections
import ctypes
import hashlib
import http.client
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "replpool"
WORK = ROOT / "target" / "soak"
DOCS = pathlib.Path(os.environ.get("SOAK_DOCS", ROOT / "docs"))
SOAK_SECS = int(os.environ.get("SOAK_SECS", "600"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "64"))
# A soak is a load the machine sustains for long, not its peak: on two cores, clients with no
# pause overload it, and a run then measures the overload (queues, cold starts past their
# deadline), not what builds up over time.
THINK_MS = float(os.environ.get("SOAK_THINK_MS", "1000"))
SEED = int(os.environ.get("SOAK_SEED", "20"))
SAMPLE_SECS = 10
# The growth figures leave out the warm-up: the first 10% of the run, and at least two samples
# (the server's allocator and the pools settle into the load's shape meanwhile).
WARMUP_SECS = max(SOAK_SECS / 10, 2 * SAMPLE_SECS)
MAX_GROWTH = 0.10
# What settles after the run (pools refill, cgroups go) must within this.
SETTLE_SECS = 90
MEMORY_MB = 1024
SESSIONS_MAX = 96
HTTP_TIMEOUT = 120
EXAMPLES = 20

CONFIG = f"""\
# Written by tests/soak/run.py: config.toml's defaults but for what a soak needs.
[server]
shutdown_grace_ms = 10000

[python]
executable = {json.dumps(str(ROOT / ".venv" / "bin" / "python"))}

[sessions]
# Above the clients' one session each: at the maximum a create would end the least recently
# used idle session, another client's (all are anonymous, one owner), and that client's next
# request would meet a 404 it could not predict.
max = {SESSIONS_MAX}

[limits]
# The memory hog must meet the sandbox: RLIMIT_AS (MemoryError) or the session's memory cgroup
# (the kernel kills the worker: MemoryError, session_reset). A preloaded worker maps ~400 MiB.
memory_mb = {MEMORY_MB}
"""

STARTED = time.monotonic()
PRINT_LOCK = threading.Lock()


def log(message):
    with PRINT_LOCK:
        print(f"[{time.monotonic() - STARTED:7.1f}s] {message}", flush=True)


class Aborted(Exception):
    """The soak could not run (the server would not start, a settle never came)."""


def eventually(what, condition, within):
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Aborted(f"not within {within}s: {what}")
        time.sleep(0.1)


# --- what the run records -----------------------------------------------------------------------


class Record:
    """Requests by kind with their latencies, and the unexpected replies. Shared by all clients."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies = collections.defaultdict(list)  # kind -> [seconds]
        self.ended = []  # (monotonic end, seconds), for the per-sample p99
        self.unexpected = collections.Counter()  # kind -> count
        self.examples = []
        self.counting = False  # the warm-up round is checked but not counted in the table

    def request(self, kind, seconds):
        with self.lock:
            if self.counting:
                self.latencies[kind].append(seconds)
                self.ended.append((time.monotonic(), seconds))

    def surprise(self, kind, message):
        with self.lock:
            self.unexpected[kind] += 1
            first = len(self.examples) < EXAMPLES
            if first:
                self.examples.append(f"{kind}: {message}")
        if first:
            log(f"UNEXPECTED {kind}: {message}")

    def window(self, since):
        with self.lock:
            return [s for end, s in self.ended if end > since]

    def total_unexpected(self):
        with self.lock:
            return sum(self.unexpected.values())


RECORD = Record()
TOUCHING_HOGS = threading.Semaphore(2)
# Set when the run ends early (Ctrl-C, an abort): the clients stop at their next operation.
ABORT = threading.Event()


def percentile(values, q):
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# --- HTTP ---------------------------------------------------------------------------------------


class Http:
    """One client's keep-alive connection to the server."""

    def __init__(self, base):
        url = urllib.parse.urlsplit(base)
        self.host, self.port = url.hostname, url.port
        self.connection = None
        self.last_used = 0.0

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def call(self, kind, method, path, body=None, content_type="application/json"):
        """(status, body bytes), or None after a transport failure (counted as unexpected)."""
        # The server closes a connection idle for server.keep_alive_timeout_ms (10 s): a
        # request sent on one it may be closing would race that, so open a fresh one first.
        if self.connection is not None and time.monotonic() - self.last_used > 5:
            self.close()
        if self.connection is None:
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        headers = {}
        if body is not None:
            if not isinstance(body, bytes):
                body = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        started = time.monotonic()
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as e:
            self.close()
            RECORD.surprise(kind, f"{method} {path}: no reply ({type(e).__name__}: {e})")
            return None
        finally:
            self.last_used = time.monotonic()
        RECORD.request(kind, self.last_used - started)
        if response.will_close:
            self.close()
        return status, data


def parse(kind, status, data):
    try:
        return json.loads(data)
    except ValueError:
        RECORD.surprise(kind, f"{status} with a body that is not JSON: {data[:200]!r}")
        return None


# --- the documented replies ---------------------------------------------------------------------

EXECUTION_FIELDS = {"status", "execution_count", "stdout", "stderr", "result", "display", "error",
                    "duration_ms", "mode", "truncated", "session_reset"}
# Set from the first error reply of the warm-up: whether this server sends `category` (issue
# 20's error categories). From then on every error reply must carry the right one.
CATEGORIES = {"sent": None}


def category_problem(body, expected):
    """What is wrong with `body`'s `category` (None if nothing): `expected` is the category the
    reply must carry, or None for a reply that must carry none."""
    sent = CATEGORIES["sent"]
    if sent is None:
        return None
    got = body.get("category")
    if not sent:
        return f"a category ({got}) from a server that sent none before" if got is not None else None
    if got != expected:
        return f"category {got!r}, expected {expected!r}"
    return None


def error_problem(body, code, category):
    """What is wrong with an HTTP error body `{"error": {"code", "message", "category"?}}`."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") != code or not isinstance(error.get("message"), str):
        return f"expected the error {code}, got {body}"
    if CATEGORIES["sent"]:
        if error.get("category") != category:
            return f"error category {error.get('category')!r}, expected {category!r}: {body}"
    return None


def short(reply):
    text = json.dumps(reply)
    return text if len(text) < 600 else text[:600] + "…"


# --- one client ---------------------------------------------------------------------------------


class Session:
    """What a client knows of its session: what the server must answer follows from it."""

    def __init__(self, session_id):
        self.id = session_id
        self.executions = 0  # None: unknown until the next reply says
        self.token = None  # the value of `token` in the namespace, when it holds one
        self.cold_before = False  # the last cell ran cold: the next reply must say session_reset


class Client:
    def __init__(self, index, base, deadline):
        self.index = index
        self.http = Http(base)
        self.random = random.Random(SEED * 1000 + index)
        self.deadline = deadline
        self.session = None
        self.serial = 0

    # --- requests with their checks ---

    def execute(self, kind, code, timeout_ms=None):
        """Runs `code` in the session; returns the reply after the checks every execution
        reply gets (or None). Updates what the client knows of the namespace."""
        s = self.session
        body = {"code": code}
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        answer = self.http.call(kind, "POST", f"/v1/sessions/{s.id}/execute", body)
        if answer is None:
            return None
        status, data = answer
        reply = parse(kind, status, data)
        if reply is None:
            return None
        if status != 200:
            RECORD.surprise(kind, f"execute: {status} {short(reply)}")
            # Whether a refused execution took a number is not ours to guess: the next reply
            # says (one surprise is enough).
            s.executions = None
            return None
        problems = []
        missing = EXECUTION_FIELDS - set(reply)
        if missing:
            problems.append(f"fields missing: {sorted(missing)}")
        if s.executions is not None and reply.get("execution_count") != s.executions + 1:
            problems.append(f"execution_count {reply.get('execution_count')}, expected {s.executions + 1}")
        s.executions = reply.get("execution_count")
        if reply.get("mode") not in ("warm", "cold"):
            problems.append(f"mode {reply.get('mode')!r}")
        if s.cold_before and reply.get("session_reset") is not True:
            problems.append("the cell before ran cold, but this reply does not say session_reset")
        if "reset_reason" in reply:
            problems.append(f"reset_reason {reply['reset_reason']!r}: nothing here runs in the background")
        if reply.get("truncated") is not False:
            problems.append("truncated")
        if reply.get("session_reset"):
            s.token = None
        s.cold_before = reply.get("mode") == "cold"
        for problem in problems:
            RECORD.surprise(kind, f"{problem}: {short(reply)}")
        return reply

    def check(self, kind, reply, status="ok", stdout="", stderr="", ename=None, evalue=None,
              category=None, result=None):
        """The reply's status, output, error and category against what `code` must give.
        `result` is None (no value) or a function that checks the bundle."""
        if reply is None:
            return False
        problems = []
        if reply.get("status") != status:
            problems.append(f"status {reply.get('status')!r}, expected {status!r}")
        if stdout is not None and reply.get("stdout") != stdout:
            problems.append(f"stdout {reply.get('stdout')!r:.200}, expected {stdout!r:.200}")
        if stderr is not None and reply.get("stderr") != stderr:
            problems.append(f"stderr {reply.get('stderr')!r:.200}, expected {stderr!r:.200}")
        error = reply.get("error")
        if ename is None:
            if error is not None:
                problems.append("an error")
        elif not isinstance(error, dict) or error.get("ename") != ename:
            problems.append(f"expected the error {ename}")
        elif evalue is not None and error.get("evalue") != evalue:
            problems.append(f"evalue {error.get('evalue')!r}, expected {evalue!r}")
        if result is None:
            if reply.get("result") is not None:
                problems.append("a result")
        else:
            why = result(reply.get("result"))
            if why:
                problems.append(why)
        if status != "ok" or ename is not None:
            wrong = category_problem(reply, category)
        else:
            wrong = category_problem(reply, None)
        if wrong:
            problems.append(wrong)
        for problem in problems:
            RECORD.surprise(kind, f"{problem}: {short(reply)}")
        return not problems

    def create(self):
        answer = self.http.call("session_create", "POST", "/v1/sessions", {})
        if answer is None:
            return False
        status, data = answer
        reply = parse("session_create", status, data)
        if reply is None:
            return False
        if (status != 201 or not isinstance(reply.get("session_id"), str)
                or reply.get("execution_count") != 0 or reply.get("state") != "idle"):
            RECORD.surprise("session_create", f"{status} {short(reply)}")
            return False
        self.session = Session(reply["session_id"])
        return True

    def delete(self):
        s = self.session
        self.session = None
        answer = self.http.call("session_delete", "DELETE", f"/v1/sessions/{s.id}")
        if answer is None:
            return
        status, data = answer
        if status != 204 or data:
            RECORD.surprise("session_delete", f"{status} {data[:200]!r}")
            return
        # Gone for good: the documented 404 on its routes.
        answer = self.http.call("session_gone", "GET", f"/v1/sessions/{s.id}")
        if answer is None:
            return
        status, data = answer
        reply = parse("session_gone", status, data)
        if reply is not None:
            problem = error_problem(reply, "session_not_found", "request") if status == 404 else f"{status} {short(reply)}"
            if problem:
                RECORD.surprise("session_gone", problem)

    # --- the workload: one method per kind of operation ---

    def op_output(self):
        n, k = self.random.randint(1, 40), self.random.randint(1, 10**6)
        code = f"import sys\nfor i in range({n}):\n    print({k} * i)\nprint('done', file=sys.stderr)"
        stdout = "".join(f"{k * i}\n" for i in range(n))
        self.check("execute_output", self.execute("execute_output", code), stdout=stdout, stderr="done\n")

    def op_dataframe(self):
        n = self.random.randint(5, 2000)
        code = (f"df = pd.DataFrame({{'a': range({n}), 'b': [i * i for i in range({n})]}})\n"
                "print(int(df['b'].sum()))\n"
                "df.describe()")

        def table(result):
            if not isinstance(result, dict) or "<table" not in result.get("text/html", "") or "text/plain" not in result:
                return f"the result is not a DataFrame's bundle: {str(result)[:200]}"
            return None

        stdout = f"{sum(i * i for i in range(n))}\n"
        self.check("execute_dataframe", self.execute("execute_dataframe", code), stdout=stdout, result=table)

    def op_plot(self):
        n = self.random.randint(10, 500)
        code = ("fig, ax = plt.subplots(figsize=(3, 2))\n"
                f"ax.plot([i % 7 for i in range({n})])\n"
                "ax.set_title('soak')\n"
                "print(len(ax.lines))")
        reply = self.execute("execute_plot", code)
        if self.check("execute_plot", reply, stdout="1\n"):
            display = reply.get("display") or []
            png = display[0].get("image/png", "") if len(display) == 1 and isinstance(display[0], dict) else ""
            try:
                ok = base64.b64decode(png[:64])[:8] == b"\x89PNG\r\n\x1a\n"
            except ValueError:
                ok = False
            if not ok:
                RECORD.surprise("execute_plot", f"display is not one PNG: {short(display)}")

    def op_error(self):
        variant = self.random.randrange(3)
        if variant == 0:
            code, ename, evalue, category = "1 / 0", "ZeroDivisionError", "division by zero", "runtime"
        elif variant == 1:
            code, ename, evalue, category = ("undefined_soak_name + 1", "NameError",
                                             "name 'undefined_soak_name' is not defined", "runtime")
        else:
            # The parser's wording changes between Python versions: the name and category say it.
            code, ename, evalue, category = "def broken(:\n    pass", "SyntaxError", None, "syntax"
        reply = self.execute("execute_error", code)
        if self.check("execute_error", reply, status="error", ename=ename, evalue=evalue, category=category):
            if not reply["error"].get("traceback"):
                RECORD.surprise("execute_error", f"no traceback: {short(reply)}")

    def op_timeout(self):
        timeout_ms = self.random.choice((200, 300, 500))
        reply = self.execute("execute_timeout", "import time\ntime.sleep(30)", timeout_ms=timeout_ms)
        if reply is None:
            return
        # At the deadline, SIGINT: a KeyboardInterrupt, the namespace kept. A worker that does
        # not answer it within execution.interrupt_grace_ms (a loaded machine) is killed: a
        # TimeoutError, session_reset (docs/architecture.md, "Failure semantics").
        killed = isinstance(reply.get("error"), dict) and reply["error"].get("ename") == "TimeoutError"
        if killed:
            evalue = (f"execution exceeded {timeout_ms} ms and ignored the interrupt; the worker was killed")
            self.check("execute_timeout", reply, status="timeout", ename="TimeoutError", evalue=evalue,
                       category="timeout")
            if reply.get("session_reset") is not True:
                RECORD.surprise("execute_timeout", f"a killed worker without session_reset: {short(reply)}")
        else:
            self.check("execute_timeout", reply, status="timeout", ename="KeyboardInterrupt", evalue="",
                       category="timeout")

    def op_state(self):
        s = self.session
        if s.token is None:
            token = f"t{self.index}-{self.serial}"
            self.serial += 1
            reply = self.execute("execute_state", f"token = {token!r}")
            if self.check("execute_state", reply) and reply.get("mode") == "warm":
                s.token = token
            return
        token = s.token
        reply = self.execute("execute_state", "token")
        if reply is None:
            return
        if reply.get("session_reset"):
            # The namespace was lost before this cell (and the reply says so): no token.
            self.check("execute_state", reply, status="error", ename="NameError",
                       evalue="name 'token' is not defined", category="runtime")
        else:
            expected = repr(token)

            def value(result):
                got = (result or {}).get("text/plain")
                return None if got == expected else f"token is {got!r}, expected {expected!r}"

            if self.check("execute_state", reply, result=value) and reply.get("mode") == "warm":
                s.token = token

    def op_files(self):
        s = self.session
        name = f"data/f{self.serial}.bin"
        self.serial += 1
        blob = self.random.randbytes(self.random.randint(1, 256 << 10))
        path = f"/v1/sessions/{s.id}/files/{name}"
        answer = self.http.call("file_upload", "PUT", path, blob, content_type="application/octet-stream")
        if answer is None:
            return
        if answer[0] != 204:
            RECORD.surprise("file_upload", f"{answer[0]} {answer[1][:200]!r}")
            return
        answer = self.http.call("file_download", "GET", path)
        if answer is None:
            return
        if answer[0] != 200 or answer[1] != blob:
            RECORD.surprise("file_download", f"{answer[0]}, {len(answer[1])} bytes, not the {len(blob)} uploaded")
            return
        code = f"import hashlib\nprint(hashlib.sha256(open({name!r}, 'rb').read()).hexdigest())"
        self.check("execute_file_read", self.execute("execute_file_read", code),
                   stdout=hashlib.sha256(blob).hexdigest() + "\n")
        # A file the session's code wrote, downloaded.
        size = self.random.randint(1, 64 << 10)
        code = f"with open('written.txt', 'w') as f:\n    f.write('w' * {size})"
        reply = self.execute("execute_file_write", code)
        if self.check("execute_file_write", reply):
            answer = self.http.call("file_download", "GET", f"/v1/sessions/{s.id}/files/written.txt")
            if answer is not None and (answer[0] != 200 or answer[1] != b"w" * size):
                RECORD.surprise("file_download", f"written.txt: {answer[0]}, {len(answer[1])} bytes, expected {size}")
        answer = self.http.call("file_delete", "DELETE", path)
        if answer is None:
            return
        if answer[0] != 204:
            RECORD.surprise("file_delete", f"{answer[0]} {answer[1][:200]!r}")
            return
        answer = self.http.call("file_gone", "GET", path)
        if answer is None:
            return
        reply = parse("file_gone", *answer)
        if reply is not None:
            problem = error_problem(reply, "file_not_found", "request") if answer[0] == 404 else f"{answer[0]} {short(reply)}"
            if problem:
                RECORD.surprise("file_gone", problem)

    def op_info(self):
        s = self.session
        answer = self.http.call("session_info", "GET", f"/v1/sessions/{s.id}")
        if answer is None:
            return
        status, data = answer
        reply = parse("session_info", status, data)
        if reply is None:
            return
        if (status != 200 or reply.get("session_id") != s.id
                or (s.executions is not None and reply.get("execution_count") != s.executions)
                or reply.get("state") != "idle" or reply.get("pending") != 0):
            RECORD.surprise("session_info", f"{status} {short(reply)}, expected {s.executions} executions, idle")

    def op_oneshot(self):
        n = self.random.randint(1, 10**6)
        # Code that mentions no preloaded name runs on the lean pool; the rest on the main one.
        if self.random.random() < 0.75:
            kind, code, stdout = "oneshot_lean", f"print(sum(range({n})))", f"{sum(range(n))}\n"
        else:
            kind, code, stdout = "oneshot_preload", f"print(int(np.arange({n}).sum()))", f"{sum(range(n))}\n"
        answer = self.http.call(kind, "POST", "/v1/execute", {"code": code})
        if answer is None:
            return
        reply = parse(kind, *answer)
        if reply is None:
            return
        if answer[0] != 200 or reply.get("execution_count") != 1 or reply.get("session_reset") is not False \
                or reply.get("mode") not in ("warm", "cold"):
            RECORD.surprise(kind, f"{answer[0]} {short(reply)}")
            return
        self.check(kind, reply, stdout=stdout)

    def op_churn(self):
        self.delete()
        self.create()

    def op_crash(self):
        reply = self.execute("execute_crash", "import os\nos._exit(1)")
        if self.check("execute_crash", reply, status="error", ename="WorkerDied",
                      evalue="the worker process died during the execution (exit code 1)",
                      category="worker_died"):
            if reply.get("session_reset") is not True or reply["error"].get("traceback") != []:
                RECORD.surprise("execute_crash", f"expected session_reset and no traceback: {short(reply)}")

    def op_memory_hog(self):
        # Touching memory up to the limit takes ~600 MiB of the machine's RAM while it runs: two
        # at a time at most; the others ask for it all at once, which is refused before any page
        # is touched (more address space than limits.memory_mb).
        touching = self.random.random() < 0.5 and TOUCHING_HOGS.acquire(blocking=False)
        if touching:
            # In a function, so that what it holds goes with the error and the session has its
            # memory back for the next cell.
            code = "def hog():\n    chunks = []\n    while True:\n        chunks.append(bytearray(32 << 20))\nhog()"
        else:
            code = "hog = bytearray(8 << 30)"
        try:
            reply = self.execute("execute_memory_hog", code)
        finally:
            if touching:
                TOUCHING_HOGS.release()
        # RLIMIT_AS: a MemoryError, the session lives on; the memory cgroup: the kernel kills the
        # worker, reported as a MemoryError with session_reset (docs/architecture.md, Sandbox).
        self.check("execute_memory_hog", reply, status="error", ename="MemoryError", stdout=None,
                   category="memory")

    OPERATIONS = (
        # (method, weight): about what share of a client's operations each kind is.
        (op_output, 18),
        (op_dataframe, 10),
        (op_plot, 7),
        (op_error, 9),
        (op_timeout, 3),
        (op_state, 12),
        (op_files, 6),
        (op_info, 5),
        (op_oneshot, 14),
        (op_churn, 5),
        (op_crash, 0.5),
        (op_memory_hog, 0.5),
    )

    def pause(self):
        if THINK_MS > 0:
            time.sleep(self.random.uniform(0, 2 * THINK_MS) / 1000)

    def warm_up(self):
        """One of each operation, paced like the run: the checks run, the figures do not count.
        Crashes and hogs by one client in eight: all at once they would be a storm no run has."""
        self.pause()
        if not self.create():
            return
        for op, weight in self.OPERATIONS:
            if weight < 1 and self.index % 8:
                continue
            if self.session is None and not self.create():
                return
            self.pause()
            op(self)
        if self.session is not None:
            self.delete()
        self.http.close()

    def run(self):
        operations = [op for op, _ in self.OPERATIONS]
        weights = [w for _, w in self.OPERATIONS]
        try:
            while time.monotonic() < self.deadline and not ABORT.is_set():
                if self.session is None and not self.create():
                    time.sleep(1)
                    continue
                self.random.choices(operations, weights)[0](self)
                self.pause()
            if self.session is not None:
                self.delete()
        except Exception as e:  # noqa: BLE001 - a client's own bug must show, not end the run quietly
            RECORD.surprise("client", f"client {self.index} failed: {type(e).__name__}: {e}")
        finally:
            self.http.close()


# --- the server and its processes ---------------------------------------------------------------

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_us():
    # If this script is killed, the server goes too (and its workers with it).
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stat_of(pid):
    """(parent pid, state, start time) from /proc/<pid>/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid):
    """{pid: start time} of every live process below `pid` (zombies left out)."""
    children = collections.defaultdict(list)
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = stat_of(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
                children[stat[0]].append(int(entry))
    found, pending = {}, list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        if child in found:
            continue
        if stats[child][1] not in ("Z", "X"):
            found[child] = stats[child][2]
        pending.extend(children.get(child, ()))
    return found


def marked(pid):
    """Pids whose environment carries REPLPOOL_SERVER_PID=pid: every process the server started
    for Python, wherever it was re-parented."""
    marker = f"REPLPOOL_SERVER_PID={pid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    stat = stat_of(int(entry))
                    if stat is not None and stat[1] not in ("Z", "X"):
                        found.append(int(entry))
        except OSError:
            continue
    return found


def cgroups_of(pid):
    name = f"replpool-{pid}"
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if name in dirs:
            found.append(os.path.join(top, name))
        dirs[:] = [d for d in dirs if not d.startswith("replpool-")]
    return found


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Aborted("no VmRSS for the server")


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Server:
    def __init__(self):
        self.dir = WORK
        self.tmp = WORK / "tmp"
        self.proc = None
        self.base = None
        self.pid = None
        self.tree = {}

    def start(self):
        self.tmp.mkdir(parents=True)
        config = self.dir / "config.toml"
        config.write_text(CONFIG)
        self.log_path = self.dir / "server.log"
        self.stderr = open(self.log_path, "wb")
        # The server's state directory is made in $TMPDIR: here, so that nothing of another
        # server's is taken for the soak's, and what it leaves is found.
        env = dict(os.environ, TMPDIR=str(self.tmp), REPLPOOL_LOG="warn")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--bind", "127.0.0.1:0", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=self.stderr, env=env, preexec_fn=die_with_us)
        self.pid = self.proc.pid
        found = {}

        def read_stdout():
            for line in self.proc.stdout:
                text = line.decode(errors="replace").strip()
                if text.startswith("listening on ") and "url" not in found:
                    found["url"] = text[len("listening on "):]

        threading.Thread(target=read_stdout, daemon=True).start()

        def listening():
            if self.proc.poll() is not None:
                raise Aborted(f"the server exited ({self.proc.returncode}) before listening: see {self.log_path}")
            return found.get("url")

        self.base = eventually("the server listens", listening, within=60)
        eventually("/readyz is 200", lambda: self.get("/readyz")[0] == 200, within=120)
        log(f"server: pid {self.pid}, {self.base}, ready; log {self.log_path}")

    def get(self, path):
        http_ = Http(self.base)
        try:
            answer = http_.call("monitor", "GET", path)
        finally:
            http_.close()
        if answer is None:
            return None, None
        try:
            return answer[0], json.loads(answer[1])
        except ValueError:
            return answer[0], None

    def pools_full(self):
        status, health = self.get("/healthz")
        if status != 200 or not health:
            return False
        pools = [health.get("pool")] + ([health["lean_pool"]] if health.get("lean_pool") else [])
        return health.get("sessions") == 0 and all(p and p.get("ready") == p.get("target") for p in pools)

    def sample(self):
        return {"rss_kib": rss_kib(self.pid), "fds": fd_count(self.pid), "processes": len(descendants(self.pid))}

    def settled(self, what, within, baseline=None):
        """Waits until no session is left, the pools are full, and the process and fd counts
        hold still (for 3 s) or are back to `baseline`. Returns the counts."""
        try:
            eventually(f"{what}: no session left, the pools full", self.pools_full, within=within)
        except Aborted as e:
            if baseline is None:
                raise
            # Judged by the counts below, which cannot be back then.
            log(str(e))
        last, steady_since = None, time.monotonic()
        deadline = time.monotonic() + within
        while True:
            now = self.sample()
            counts = (now["processes"], now["fds"])
            if baseline is not None and now["processes"] <= baseline["processes"] and now["fds"] <= baseline["fds"]:
                return now
            if counts != last:
                last, steady_since = counts, time.monotonic()
            elif baseline is None and time.monotonic() - steady_since >= 3:
                return now
            if time.monotonic() > deadline:
                return now
            time.sleep(0.2)

    def stop(self):
        """SIGTERM, then SIGKILL after the grace; returns the exit status. Its process tree is
        remembered first: once the server is gone, its children's parent is no longer it."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.tree = descendants(self.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            log("the server did not exit within 40 s of SIGTERM: SIGKILL")
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode

    def leftovers(self):
        """What of the server is still there: processes of its tree (same pid, same start
        time), processes carrying its marker, its cgroups, its state directories."""
        left = []
        for pid, start in self.tree.items():
            stat = stat_of(pid)
            if stat is not None and stat[2] == start and stat[1] not in ("Z", "X"):
                left.append(f"process {pid}")
        left += [f"process {pid} (REPLPOOL_SERVER_PID)" for pid in marked(self.pid) if f"process {pid}" not in left]
        left += [f"cgroup {path}" for path in cgroups_of(self.pid)]
        left += [f"state directory {path}" for path in self.tmp.glob("replpool-*")]
        return left

    def kill_leftovers(self):
        for pid in set(self.tree) | set(marked(self.pid)):
            stat = stat_of(pid)
            if stat is not None and (pid not in self.tree or stat[2] == self.tree[pid]):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


# --- the run ------------------------------------------------------------------------------------


def sampler(server, samples, stop, started):
    """A sample every SAMPLE_SECS from `started`, until `stop` is set."""
    n = 1
    while not stop.wait(max(0.0, started + n * SAMPLE_SECS - time.monotonic())):
        now = time.monotonic()
        try:
            sample = server.sample()
        except (OSError, Aborted) as e:
            RECORD.surprise("monitor", f"the server cannot be sampled: {e}")
            return
        window = RECORD.window(now - SAMPLE_SECS)
        sample.update(t=round(now - started), requests=len(window),
                      p99_ms=(percentile(window, 99) or 0) * 1000, unexpected=RECORD.total_unexpected())
        samples.append(sample)
        log(f"t={sample['t']:4d}s  rss {sample['rss_kib'] / 1024:7.1f} MiB  fds {sample['fds']:4d}  "
            f"processes {sample['processes']:3d}  requests {sample['requests']:5d}  "
            f"p99 {sample['p99_ms']:8.1f} ms  unexpected {sample['unexpected']}")
        n += 1


def growth(samples):
    """RSS and fds at the start and the end of the measured part (after the warm-up): the
    median of the first three samples after it and of the last three."""
    measured = [s for s in samples if s["t"] > WARMUP_SECS]
    if not measured:
        return None
    first, last = measured[:3], measured[-3:]
    figures = {}
    for key in ("rss_kib", "fds"):
        start, end = statistics.median(s[key] for s in first), statistics.median(s[key] for s in last)
        figures[key] = (start, end, end / start - 1 if start else 0.0)
    return figures


def main():
    if not BINARY.exists():
        print(f"{BINARY} is missing: `make soak` builds it (or cargo build --release --locked)", file=sys.stderr)
        return 2
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    server = Server()
    verdict = {}
    try:
        server.start()
        # A first error reply says whether this server sends error categories.
        probe = Client(-1, server.base, 0)
        if probe.create():
            reply = probe.execute("probe", "1 / 0")
            CATEGORIES["sent"] = bool(reply and "category" in reply)
            probe.delete()
        probe.http.close()
        log(f"error categories: {'checked' if CATEGORIES['sent'] else 'not sent by this server'}")

        log(f"warm-up round: {CLIENTS} clients, one of each operation")
        clients = [Client(i, server.base, 0) for i in range(CLIENTS)]
        threads = [threading.Thread(target=c.warm_up, daemon=True) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        baseline = server.settled("after the warm-up round", within=SETTLE_SECS)
        baseline["rss_kib"] = rss_kib(server.pid)
        log(f"idle baseline: {baseline['processes']} processes, {baseline['fds']} fds, "
            f"rss {baseline['rss_kib'] / 1024:.1f} MiB")

        log(f"soak: {CLIENTS} clients for {SOAK_SECS}s (warm-up: the first {WARMUP_SECS:.0f}s)")
        RECORD.counting = True
        started = time.monotonic()
        samples = [dict(server.sample(), t=0, requests=0, p99_ms=0.0, unexpected=RECORD.total_unexpected())]
        stop = threading.Event()
        watch = threading.Thread(target=sampler, args=(server, samples, stop, started), daemon=True)
        watch.start()
        clients = [Client(i, server.base, started + SOAK_SECS) for i in range(CLIENTS)]
        threads = [threading.Thread(target=c.run, daemon=True) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        stop.set()
        watch.join()
        RECORD.counting = False
        log(f"clients done after {elapsed:.0f}s; waiting for the server to settle")

        after = server.settled("after the run", within=SETTLE_SECS, baseline=baseline)
        after["rss_kib"] = rss_kib(server.pid)
        log(f"after the run: {after['processes']} processes, {after['fds']} fds, rss {after['rss_kib'] / 1024:.1f} MiB")
        exit_status = server.stop()
        left = server.leftovers()
        verdict = judge(samples, baseline, after, exit_status, left)
        write_docs(samples, baseline, after, exit_status, left, elapsed, verdict)
    except Aborted as e:
        log(f"ABORTED: {e}")
        log(f"server log: {server.dir / 'server.log'}")
        return 1
    finally:
        ABORT.set()
        server.stop()
        if server.tree or server.pid:
            server.kill_leftovers()
    for name, (ok, text) in verdict.items():
        log(f"{'pass' if ok else 'FAIL'}: {name}: {text}")
    passed = all(ok for ok, _ in verdict.values())
    log(f"{'PASSED' if passed else 'FAILED'}; {DOCS / 'soak.md'} and {DOCS / 'soak.png'} written")
    if not passed:
        log(f"server log: {server.dir / 'server.log'}")
    return 0 if passed else 1


def judge(samples, baseline, after, exit_status, left):
    unexpected = RECORD.total_unexpected()
    figures = growth(samples)
    verdict = {
        "unexpected replies": (unexpected == 0, f"{unexpected}"),
        "processes back to the idle baseline": (
            after["processes"] <= baseline["processes"], f"{baseline['processes']} → {after['processes']}"),
        "fds back to the idle baseline": (after["fds"] <= baseline["fds"], f"{baseline['fds']} → {after['fds']}"),
    }
    if figures is None:
        verdict["growth after warm-up"] = (False, "no sample after the warm-up: SOAK_SECS too short")
    else:
        for key, name, show in (("rss_kib", "RSS", lambda v: f"{v / 1024:.1f} MiB"), ("fds", "fds", "{:.0f}".format)):
            start, end, rise = figures[key]
            verdict[f"{name} growth under {MAX_GROWTH:.0%} after warm-up"] = (
                rise < MAX_GROWTH, f"{show(start)} → {show(end)} ({rise:+.1%})")
    verdict["clean exit on SIGTERM"] = (exit_status == 0, f"exit status {exit_status}")
    verdict["nothing left behind"] = (not left, ", ".join(left[:10]) or "no process, cgroup or state directory")
    return verdict


# --- docs/soak.md and docs/soak.png -------------------------------------------------------------


def git_revision():
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    memory = "?"
    try:
        with open("/proc/meminfo") as f:
            memory = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores, {memory} RAM, Linux {platform.release()}, as uid {os.geteuid()}"


def ms(seconds):
    return "–" if seconds is None else f"{seconds * 1000:.1f}"


def write_docs(samples, baseline, after, exit_status, left, elapsed, verdict):
    DOCS.mkdir(parents=True, exist_ok=True)
    figures = growth(samples)
    passed = all(ok for ok, _ in verdict.values())
    with RECORD.lock:
        kinds = sorted(RECORD.latencies)
        latencies = {k: list(RECORD.latencies[k]) for k in kinds}
        unexpected = dict(RECORD.unexpected)
        examples = list(RECORD.examples)
    total = sum(len(v) for v in latencies.values())
    lines = [
        "# Soak",
        "",
        "Written by `make soak` (`tests/soak/run.py`) from its last run: run it again to replace this",
        "page and `soak.png`. What the run does and what it checks: the script's docstring and",
        "\"How it is measured\" below.",
        "",
        f"**{'PASSED' if passed else 'FAILED'}** — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"revision {git_revision()}, {machine()}.",
        "",
        "| | |",
        "|---|---|",
        f"| duration | {elapsed:.0f} s (SOAK_SECS={SOAK_SECS}), after a warm-up round |",
        f"| clients | {CLIENTS} concurrent, keep-alive connections, {THINK_MS:.0f} ms mean pause between operations |",
        f"| requests | {total} ({total / elapsed:.1f}/s) |",
        f"| unexpected replies | {sum(unexpected.values())} |",
    ]
    if figures:
        for key, name, unit in (("rss_kib", "server RSS", 1024), ("fds", "server open fds", 1)):
            start, end, rise = figures[key]
            fmt = (lambda v: f"{v / 1024:.1f} MiB") if unit == 1024 else (lambda v: f"{v:.0f}")
            lines.append(f"| {name} under load, start → end | {fmt(start)} → {fmt(end)} ({rise:+.1%}) |")
    lines += [
        f"| server RSS idle, baseline → after | {baseline['rss_kib'] / 1024:.1f} MiB → {after['rss_kib'] / 1024:.1f} MiB |",
        f"| open fds idle, baseline → after | {baseline['fds']} → {after['fds']} |",
        f"| processes idle, baseline → after | {baseline['processes']} → {after['processes']} |",
        f"| peak under load | RSS {max(s['rss_kib'] for s in samples) / 1024:.1f} MiB, "
        f"{max(s['fds'] for s in samples)} fds, {max(s['processes'] for s in samples)} processes |",
        f"| server exit on SIGTERM | status {exit_status}; left behind: {', '.join(left[:5]) or 'nothing'} |",
        "",
        "| check | result | |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {'pass' if ok else '**FAIL**'} | {text} |" for name, (ok, text) in verdict.items()]
    lines += [
        "",
        "## Requests by kind",
        "",
        "Requests and latencies of the run (the warm-up round left out); unexpected replies of the",
        "warm-up round and the run. Latency is the client's, from sending the request to the end of",
        "the reply (ms).",
        "",
        "| kind | requests | unexpected | p50 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        values = latencies[kind]
        lines.append(f"| {kind} | {len(values)} | {unexpected.get(kind, 0)} | {ms(percentile(values, 50))} | "
                     f"{ms(percentile(values, 99))} | {ms(max(values))} |")
    for kind in sorted(set(unexpected) - set(kinds)):
        lines.append(f"| {kind} | – | {unexpected[kind]} | | | |")
    if examples:
        lines += ["", "## First unexpected replies", "", "```"] + examples + ["```"]
    lines += [
        "",
        "## Over time",
        "",
        "![server RSS, open fds, processes and p99 latency every 10 s](soak.png)",
        "",
        "| t (s) | RSS (MiB) | fds | processes | requests | p99 (ms) | unexpected |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {s['t']} | {s['rss_kib'] / 1024:.1f} | {s['fds']} | {s['processes']} | {s['requests']} | "
              f"{s['p99_ms']:.0f} | {s['unexpected']} |" for s in samples]
    lines += [
        "",
        "## How it is measured",
        "",
        f"- The server: `target/release/replpool serve` with `config.toml`'s defaults but `sessions.max = "
        f"{SESSIONS_MAX}` (above the clients' one session each) and `limits.memory_mb = {MEMORY_MB}` (the "
        "memory hog meets the sandbox), its state directory and log under `target/soak/`.",
        "- The workload, per client, one operation at a time, picked at random (fixed seed) with these "
        "weights: " + ", ".join(f"{op.__name__.removeprefix('op_')} {w}" for op, w in Client.OPERATIONS) + ". "
        "Output: prints to stdout and stderr; dataframe: a DataFrame's sum and `describe()` (an HTML table); "
        "plot: a figure (one PNG in `display`); error: ZeroDivisionError, NameError, SyntaxError; timeout: "
        "`time.sleep(30)` with a `timeout_ms` of 200–500; state: a variable set, then read back in later "
        "cells (gone exactly when a reply says `session_reset`); files: an upload up to 256 KiB, its "
        "download, its hash read by a cell, a file a cell wrote downloaded, a delete, then 404; info: "
        "`GET` the session (its `execution_count`); oneshot: `POST /v1/execute` (lean, or using numpy); "
        "churn: delete the session (then 404) and create another; crash: `os._exit(1)` (WorkerDied, "
        "`session_reset`); memory_hog: `bytearray(8 << 30)` or 32 MiB chunks until the limit (MemoryError).",
        "- Unexpected: any reply other than the documented one for what was sent (status code, `status`, "
        "`ename`/`evalue`, error `code`, stdout and stderr, `execution_count`, `session_reset` after a loss "
        "or a cold cell, `category` where the server sends categories), and any request without a reply.",
        f"- Samples every {SAMPLE_SECS} s: VmRSS of `/proc/<pid>/status`, entries of `/proc/<pid>/fd`, "
        "the server's live descendants (templates, workers, the watcher), and the p99 of the requests "
        "that ended in the last 10 s.",
        f"- Warm-up: a round of one of each operation per client before the run, then the first "
        f"{WARMUP_SECS:.0f} s of the run (10%, at least two samples). The idle baseline is taken after "
        "that round, with every session deleted and the pools full; after the run the same state must "
        "give no more processes and fds. Growth under load compares the median of the first three "
        "samples after the warm-up with the median of the last three; it must stay under 10%.",
        "",
    ]
    (DOCS / "soak.md").write_text("\n".join(lines))
    chart(samples)


def chart(samples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(7, 5.5), sharex=True)
    axes[0].plot(t, [s["rss_kib"] / 1024 for s in samples], color="tab:blue")
    axes[0].set_ylabel("server RSS (MiB)")
    axes[0].set_ylim(bottom=0)
    axes[1].plot(t, [s["fds"] for s in samples], color="tab:orange", label="open fds")
    axes[1].plot(t, [s["processes"] for s in samples], color="tab:green", label="processes (the server's descendants)")
    axes[1].set_ylabel("server fds, processes")
    axes[1].set_ylim(bottom=0)
    axes[1].legend(loc="lower right", fontsize="small")
    axes[2].plot(t, [s["p99_ms"] for s in samples], color="tab:red")
    axes[2].set_ylabel("p99 (ms), last 10 s")
    axes[2].set_ylim(bottom=0)
    axes[2].set_xlabel("seconds")
    for ax in axes:
        ax.axvspan(0, WARMUP_SECS, color="0.9", zorder=0)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"replpool soak: {CLIENTS} clients, {SOAK_SECS} s (grey: warm-up)", fontsize="medium")
    fig.tight_layout()
    fig.savefig(DOCS / "soak.png", dpi=80, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
