#!/usr/bin/env python3
"""`make test-cluster`: two replpool nodes behind nginx on loopback (issue 18).

Starts node-a and node-b (target/release/replpool, free 127.0.0.1 ports, each with its own
state directory under target/cluster/), nginx in front with deploy/nginx/render.py's config,
and checks through nginx what docs/deploy.md ("Many nodes") promises. Standard library and
the `replpool` package (`make package`: its Client's view of a lost node).
Installs nginx from Debian's packages first when it is missing (needs root). Ends everything
it started, by pid, whatever happens. Exit status 0 when every check passed.
"""

import ctypes
import hashlib
import http.client
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import replpool

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "release" / "replpool"
WORK = ROOT / "target" / "cluster"
SESSIONS = 100
FILE_LIMIT = 2 << 20
STARTED = time.monotonic()


def log(message):
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def eventually(what, condition, within=30.0):
    """Polls `condition` until it returns something true; fails naming `what` after `within`."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"not within {within}s: {what}")
        time.sleep(0.02)


# --- HTTP -------------------------------------------------------------------------------------


def request(base, method, path, body=None, headers=None, timeout=60):
    """One request on a fresh connection; returns (status, headers, body bytes)."""
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        headers = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def call(base, method, path, body=None, **kw):
    """A request whose reply must be JSON; returns (status, parsed body)."""
    status, headers, raw = request(base, method, path, body, **kw)
    try:
        return status, json.loads(raw)
    except ValueError:
        raise CheckFailed(f"{method} {path[:120]}: {status} with a body that is not JSON: {raw[:300]!r}")


def create(base):
    status, reply = call(base, "POST", "/v1/sessions", {})
    check(status == 201 or status == 200, f"create: {status} {reply}")
    return reply["session_id"]


def execute(base, session, code, **kw):
    status, reply = call(base, "POST", f"/v1/sessions/{session}/execute", {"code": code}, **kw)
    check(status == 200, f"execute in {session}: {status} {reply}")
    return reply


def result_text(reply):
    check(reply.get("status") == "ok", f"cell failed: {reply}")
    return (reply.get("result") or {}).get("text/plain")


def node_of(session_id):
    return session_id.split(".", 1)[0]


# --- processes --------------------------------------------------------------------------------

LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_us():
    # If this harness is killed, what it started goes too.
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Node:
    def __init__(self, name):
        self.name = name
        self.dir = WORK / name
        self.tmp = self.dir / "tmp"
        self.proc = None
        self.base = None

    def start(self):
        self.tmp.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.toml"
        python = ROOT / ".venv" / "bin" / "python"
        # Light workers (nothing preloaded): the checks are about routing, and 100 sessions
        # share the machine with other work.
        config.write_text(
            "[server]\nshutdown_grace_ms = 10000\n"
            f"[python]\nexecutable = {json.dumps(str(python) if python.exists() else 'python3')}\n"
            "preload = []\n"
            "[pool]\nwarm_workers = 2\n"
            "[sessions]\nmax = 150\n"
            # Small enough to go over cheaply: the proxy must let the node refuse it.
            f"[files]\nmax_bytes = {FILE_LIMIT}\n"
        )
        env = dict(os.environ, TMPDIR=str(self.tmp), REPLPOOL_LOG="warn")
        # The node's name the way Kubernetes gives it (the downward API sets this variable).
        env["REPLPOOL_SERVER_NODE"] = self.name
        self.stderr = open(self.dir / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--bind", "127.0.0.1:0", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            preexec_fn=die_with_us,
        )
        found = {}

        def read_stdout():
            for line in self.proc.stdout:
                text = line.decode(errors="replace").strip()
                if text.startswith("listening on ") and "url" not in found:
                    found["url"] = text[len("listening on "):]

        threading.Thread(target=read_stdout, daemon=True).start()
        self.base = eventually(
            f"{self.name} listens (see {self.dir / 'stderr.log'})",
            lambda: found.get("url") or (self.proc.poll() is not None and _exited(self)),
            within=60,
        )
        eventually(f"{self.name} /readyz is 200", lambda: self.readyz()[0] == 200, within=60)
        log(f"{self.name}: pid {self.proc.pid}, {self.base}, ready")

    def readyz(self):
        try:
            return call(self.base, "GET", "/readyz", timeout=5)
        except OSError:
            return (None, None)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            end(self.proc, signal.SIGTERM, 15)


def end(proc, graceful, within):
    """Asks `proc` to end with the `graceful` signal; kills it if it has not within that many
    seconds. Either way it is reaped."""
    proc.send_signal(graceful)
    try:
        proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exited(node):
    raise CheckFailed(f"{node.name} exited ({node.proc.returncode}) before listening: see {node.dir / 'stderr.log'}")


class Nginx:
    def __init__(self, nodes):
        self.dir = WORK / "nginx"
        self.nodes = nodes
        self.proc = None

    def start(self):
        (self.dir / "temp").mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        args = [sys.executable, str(ROOT / "deploy" / "nginx" / "render.py"),
                "--listen", f"127.0.0.1:{port}", "--prefix", str(self.dir),
                "--config", str(self.nodes[0].dir / "config.toml"), "--worker-processes", "1",
                "-o", str(self.dir / "nginx.conf")]
        for node in self.nodes:
            args += ["--node", f"{node.name}={urllib.parse.urlsplit(node.base).netloc}"]
        subprocess.run(args, check=True)
        nginx = nginx_binary()
        command = [nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                   "-e", str(self.dir / "error.log"), "-g", "daemon off;"]
        subprocess.run(command[:-2] + ["-t", "-q"], check=True)
        self.proc = subprocess.Popen(command, preexec_fn=die_with_us)
        eventually("nginx listens", lambda: _answers(self.base), within=20)
        log(f"nginx: pid {self.proc.pid}, {self.base}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            # QUIT: graceful; nginx ends its worker processes itself.
            end(self.proc, signal.SIGQUIT, 10)


def nginx_binary():
    return shutil.which("nginx") or "/usr/sbin/nginx"


def kubernetes_rendering_is_valid():
    """deploy/k8s/nginx.conf (the Kubernetes form: per-pod DNS names, a resolver) passes
    `nginx -t`; only the loopback form is run here, so this keeps the other from rotting.
    The cluster's names do not resolve here and its /tmp is not ours: those are swapped for
    loopback and this run's directory, nothing else."""
    out = WORK / "k8s"
    out.mkdir(parents=True, exist_ok=True)
    text = (ROOT / "deploy" / "k8s" / "nginx.conf").read_text()
    for cluster, here in (("server replpool.replpool.svc.cluster.local:8765", "server 127.0.0.1:9"),
                          ("resolver kube-dns.kube-system.svc.cluster.local", "resolver 127.0.0.1"),
                          ("listen 8080;", "listen 127.0.0.1:9;"),
                          (" /tmp/", f" {out}/")):
        check(cluster in text, f"deploy/k8s/nginx.conf has no {cluster!r}: update this check")
        text = text.replace(cluster, here)
    (out / "nginx.conf").write_text(text)
    test = subprocess.run([nginx_binary(), "-t", "-q", "-p", str(out), "-c", str(out / "nginx.conf"),
                           "-e", str(out / "error.log")], capture_output=True, text=True)
    check(test.returncode == 0, f"deploy/k8s/nginx.conf fails nginx -t: {test.stderr}")
    log("deploy/k8s/nginx.conf passes nginx -t")


def _answers(base):
    try:
        request(base, "GET", "/healthz", timeout=2)
        return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_nginx():
    if shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"):
        return
    check(os.geteuid() == 0, "nginx is missing and only root can install it: apt-get install nginx")
    log("installing nginx from Debian's packages")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "nginx"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, env=env, check=True, stdout=subprocess.DEVNULL)
    # The package's own service is not ours to run (a container has no init to start it,
    # and policy-rc.d usually forbids it; stop it if something did start it).
    subprocess.run(["service", "nginx", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def ensure_binary():
    if BINARY.exists():
        return
    log("building target/release/replpool (cargo build --release --locked)")
    subprocess.run(["nice", "-n", "19", "cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)


# --- what is left of a node -------------------------------------------------------------------


def processes_of(pid):
    """Pids whose environment carries REPLPOOL_SERVER_PID=pid (the server's workers)."""
    marker = f"REPLPOOL_SERVER_PID={pid}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat") as s:
                        state = s.read().rsplit(")", 1)[1].split()[0]
                    if state not in ("Z", "X"):
                        found.append(int(entry))
        except OSError:
            continue
    if os.path.exists(f"/proc/{pid}"):
        try:
            with open(f"/proc/{pid}/stat") as s:
                if s.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append(pid)
        except OSError:
            pass
    return found


def cgroups_of(pid):
    name = f"replpool-{pid}"
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        if name in dirs:
            found.append(os.path.join(top, name))
        # replpool's own directories hold only session cgroups: no need to look inside.
        dirs[:] = [d for d in dirs if not d.startswith("replpool-")]
    return found


def state_dirs(node):
    return [p for p in node.tmp.glob("replpool-*") if p.is_dir()] if node.tmp.exists() else []


def clean_after_kill(node, pid):
    """What a node killed with SIGKILL could not remove itself (the Rust tests do the same)."""
    eventually(f"{node.name}'s workers end with it", lambda: not processes_of(pid), within=20)
    for path in cgroups_of(pid):
        for top, dirs, _ in os.walk(path, topdown=False):
            try:
                os.rmdir(top)
            except OSError as e:
                log(f"cannot remove cgroup {top}: {e}")
    for path in state_dirs(node):
        shutil.rmtree(path, ignore_errors=True)


# --- the checks -------------------------------------------------------------------------------


def sessions_and_fair_share(proxy):
    log(f"1. creating {SESSIONS} sessions through nginx")
    with ThreadPoolExecutor(8) as pool:
        sessions = list(pool.map(lambda _: create(proxy), range(SESSIONS)))
    share = {}
    for s in sessions:
        share[node_of(s)] = share.get(node_of(s), 0) + 1
    log(f"   sessions per node: {share}")
    for name in ("node-a", "node-b"):
        check(share.get(name, 0) >= 0.3 * SESSIONS, f"{name} got under 30% of the sessions: {share}")
    check(set(share) == {"node-a", "node-b"}, f"ids naming other nodes: {share}")

    def round_trip(args):
        session, r = args
        execute(proxy, session, f"x = {session!r} + ':{r}'")

    def read_back(args):
        session, r = args
        got = result_text(execute(proxy, session, "x"))
        check(got == repr(f"{session}:{r}"), f"{session} round {r}: x is {got}")

    with ThreadPoolExecutor(8) as pool:
        for r in range(5):
            # Every session writes, then every session reads: reads interleave across
            # sessions and nodes, so a request sent to the wrong node would show.
            list(pool.map(round_trip, [(s, r) for s in sessions]))
            list(pool.map(read_back, [(s, r) for s in reversed(sessions)]))
    log("   every session read back its own value, 5 rounds")

    # A request whose URI names no id goes where its X-Replpool-Session header says: the
    # session list (each node lists its own) must come from the header's node every time.
    for session in (next(s for s in sessions if node_of(s) == n) for n in ("node-a", "node-b")):
        for _ in range(4):
            status, reply = call(proxy, "GET", "/v1/sessions", headers={"X-Replpool-Session": session})
            listed = {node_of(s["session_id"]) for s in reply.get("sessions", [])}
            check(status == 200 and listed == {node_of(session)},
                  f"GET /v1/sessions with X-Replpool-Session {session}: {status}, nodes {listed}")
    log("   X-Replpool-Session routes a request whose URI names no id")
    return sessions


def sse_and_files(proxy, session):
    log("2. SSE streaming and a 1 MiB file through nginx")
    code = "import time\nfor i in range(4):\n    print(i, flush=True)\n    time.sleep(0.4)\n'end'"
    url = urllib.parse.urlsplit(proxy)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        sent = time.monotonic()
        connection.request("POST", f"/v1/sessions/{session}/execute?stream=true",
                           body=json.dumps({"code": code}),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        check(response.status == 200, f"SSE: {response.status}")
        check(response.getheader("Content-Type", "").startswith("text/event-stream"),
              f"SSE content type: {response.getheader('Content-Type')}")
        events = []
        event = None
        while True:
            line = response.fp.readline()
            if not line:
                break
            line = line.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line[5:].strip()), time.monotonic() - sent))
                if event in ("result", "error"):
                    break
    finally:
        connection.close()
    streams = [e for e in events if e[0] == "stream"]
    check(streams and events[-1][0] == "result", f"SSE events: {events}")
    first, last = streams[0][2], events[-1][2]
    # Unbuffered: the first line arrives while the cell still runs (it sleeps 1.6 s after
    # printing it), well before the end; a buffering proxy would deliver all at once.
    check(first < last / 2, f"SSE first event at {first:.2f}s, result at {last:.2f}s: buffered")
    text = "".join(e[1].get("text", "") for e in streams)
    check(text == "0\n1\n2\n3\n", f"SSE text {text!r}")
    log(f"   {len(streams)} stream events, first at {first:.2f}s, result at {last:.2f}s")

    blob = os.urandom(1 << 20)
    status, _, body = request(proxy, "PUT", f"/v1/sessions/{session}/files/blob.bin", blob,
                              headers={"Content-Type": "application/octet-stream"})
    check(status in (200, 201, 204), f"upload: {status} {body[:300]!r}")
    status, _, body = request(proxy, "GET", f"/v1/sessions/{session}/files/blob.bin")
    check(status == 200 and body == blob, f"download: {status}, {len(body)} bytes, equal: {body == blob}")
    seen = result_text(execute(proxy, session, "import hashlib\nhashlib.sha256(open('blob.bin','rb').read()).hexdigest()"))
    check(seen == repr(hashlib.sha256(blob).hexdigest()), f"the session sees another file: {seen}")
    log("   1 MiB uploaded, downloaded and read by the session, byte for byte")
    status, reply = call(proxy, "PUT", f"/v1/sessions/{session}/files/big.bin", bytes(FILE_LIMIT + 1),
                         headers={"Content-Type": "application/octet-stream"})
    check(status == 413 and reply["error"]["code"] == "file_too_large",
          f"an upload over files.max_bytes through nginx: {status} {reply}")
    log("   one byte over files.max_bytes: the node's own 413 file_too_large passes through")
    # What nginx refuses by itself is JSON too, never its HTML page.
    long_id = f"node-a.{'0' * 20000}"
    status, reply = call(proxy, "GET", f"/v1/sessions/{long_id}")
    check(status == 414 and reply["error"]["code"] == "uri_too_long", f"a 20 kB URI: {status} {reply}")
    status, reply = call(proxy, "GET", "/v1/sessions", headers={"X-Filler": "x" * 20000})
    check(status == 431 and reply["error"]["code"] == "headers_too_large", f"a 20 kB header: {status} {reply}")
    log("   nginx's own 414 and 431 are JSON in replpool's shape")


def multipart(files, metadata):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    boundary = "replpool-cluster-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="tar"; filename="files.tar"\r\n'
        "Content-Type: application/x-tar\r\n\r\n"
    ).encode() + buffer.getvalue() + (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        f"{json.dumps(metadata)}\r\n--{boundary}--\r\n"
    ).encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def python_executor(proxy):
    log("3. python-executor exec/async, then GET /api/v1/executions/{id}, through nginx")
    ids = []
    for i in range(4):
        body, headers = multipart([("main.py", f"print('async {i}')")], {"entrypoint": "main.py"})
        status, reply = call(proxy, "POST", "/api/v1/exec/async", body, headers=headers)
        check(status in (200, 202), f"exec/async: {status} {reply}")
        ids.append(reply["execution_id"])
    nodes = {i.removeprefix("exe_").split(".", 1)[0] for i in ids}
    check(nodes <= {"node-a", "node-b"}, f"execution ids naming other nodes: {ids}")
    for i, execution in enumerate(ids):
        def finished():
            status, reply = call(proxy, "GET", f"/api/v1/executions/{execution}")
            check(status == 200, f"GET {execution}: {status} {reply}")
            return reply if reply["status"] not in ("pending", "running") else None
        reply = eventually(f"execution {execution} finishes", finished)
        check(reply["status"] == "completed" and reply["stdout"] == f"async {i}\n",
              f"execution {execution}: {reply}")
    log(f"   {len(ids)} executions found through nginx, on {sorted(nodes)}")
    return ids


def wrong_node(nodes, sessions, executions):
    log("4. an id sent directly to the other node: 421 wrong_node")
    by_name = {n.name: n for n in nodes}
    for session in (next(s for s in sessions if node_of(s) == "node-a"),
                    next(s for s in sessions if node_of(s) == "node-b")):
        other = by_name["node-b" if node_of(session) == "node-a" else "node-a"]
        status, reply = call(other.base, "GET", f"/v1/sessions/{session}")
        check(status == 421 and reply["error"]["code"] == "wrong_node", f"{session} at {other.name}: {status} {reply}")
        check(node_of(session) in reply["error"]["message"], f"421 does not name the node: {reply}")
    execution = executions[0]
    owner = execution.removeprefix("exe_").split(".", 1)[0]
    other = by_name["node-b" if owner == "node-a" else "node-a"]
    status, reply = call(other.base, "GET", f"/api/v1/executions/{execution}")
    check(status == 421 and reply["error"]["code"] == "wrong_node", f"{execution} at {other.name}: {status} {reply}")
    log("   421 wrong_node for a session id and an execution id")


def kill_node_b(proxy, node_b, sessions):
    log("5. kill -9 node-b")
    b_sessions = [s for s in sessions if node_of(s) == "node-b"][:10]
    a_sessions = [s for s in sessions if node_of(s) == "node-a"][:10]
    pid = node_b.proc.pid
    killed = time.monotonic()
    node_b.proc.kill()
    node_b.proc.wait()
    for session in b_sessions:
        status, reply = call(proxy, "GET", f"/v1/sessions/{session}", timeout=5)
        check(status == 503 and reply["error"]["code"] == "node_unavailable",
              f"{session} after node-b died: {status} {reply}")
        check("node-b" in reply["error"]["message"], f"node_unavailable does not name node-b: {reply}")
        status, reply = call(proxy, "POST", f"/v1/sessions/{session}/execute", {"code": "x"}, timeout=5)
        check(status == 503 and reply["error"]["code"] == "node_unavailable",
              f"execute in {session} after node-b died: {status} {reply}")
    answered = time.monotonic() - killed
    check(answered < 2.0, f"node-b's sessions took {answered:.2f}s to answer node_unavailable")
    log(f"   {len(b_sessions)} node-b sessions: 503 node_unavailable (JSON) within {answered:.2f}s")
    try:
        replpool.Client(proxy).execute(b_sessions[0], "x", None, None)
        check(False, f"the Python Client ran a cell in {b_sessions[0]} after node-b died")
    except replpool.NodeUnavailable as e:
        check("node-b" in str(e), f"the Client's NodeUnavailable does not name node-b: {e}")
    log("   the Python Client raises NodeUnavailable (a SessionNotFound) naming node-b")
    for session in a_sessions:
        got = result_text(execute(proxy, session, "x"))
        check(got == repr(f"{session}:4"), f"node-a's {session} after node-b died: {got}")
    fresh = [create(proxy) for _ in range(6)]
    check(all(node_of(s) == "node-a" for s in fresh), f"new sessions after node-b died: {fresh}")
    log("   node-a's sessions unaffected; 6 new sessions all on node-a")
    return pid


def drain_node_a(proxy, node_a, session):
    log("6. SIGTERM node-a while a cell runs")
    outcome = {}

    def run_cell():
        try:
            outcome["reply"] = call(proxy, "POST", f"/v1/sessions/{session}/execute",
                                    {"code": "import time\ntime.sleep(3)\n'finished'"}, timeout=60)
        except Exception as e:  # noqa: BLE001 - reported by the check below
            outcome["error"] = e

    cell = threading.Thread(target=run_cell)
    cell.start()
    eventually("the cell runs", lambda: call(proxy, "GET", f"/v1/sessions/{session}")[1].get("state") == "busy")
    signalled = time.monotonic()
    node_a.proc.send_signal(signal.SIGTERM)
    # The signal is handled asynchronously: poll, and require the flip long before the cell
    # (3 s) could end.
    reply = eventually("/readyz turns 503 draining", lambda: (lambda r: r[0] == 503 and r[1])(node_a.readyz()))
    flipped = time.monotonic() - signalled
    check(reply.get("status") == "draining" and cell.is_alive(), f"/readyz after SIGTERM: {reply}")
    asked = time.monotonic()
    status, reply = call(proxy, "POST", "/v1/sessions", {}, timeout=30)
    took = time.monotonic() - asked
    check(status == 503 and reply.get("error", {}).get("code") in ("draining", "no_node_ready"),
          f"create while no node is ready: {status} {reply}")
    check(cell.is_alive(), "the create's answer came only after the running cell ended: it waited")
    log(f"   /readyz 503 draining {flipped * 1000:.0f} ms after SIGTERM; a create got 503 {reply['error']['code']} in {took:.2f}s, while the cell ran")
    cell.join(60)
    check("reply" in outcome, f"the running cell's reply: {outcome.get('error')}")
    status, reply = outcome["reply"]
    check(status == 200 and result_text(reply) == repr("finished"), f"the running cell: {status} {reply}")
    log("   the running cell's reply arrived")
    pid = node_a.proc.pid
    code = node_a.proc.wait(timeout=30)
    check(code == 0, f"node-a exited {code}")
    status, reply = call(proxy, "POST", "/v1/sessions", {}, timeout=30)
    check(status == 503 and reply["error"]["code"] == "no_node_ready", f"create with no node: {status} {reply}")
    log("   node-a exited 0; a create now gets 503 no_node_ready")
    return pid


def nothing_left(nodes, pids):
    log("7. nothing left behind")
    for node, pid in zip(nodes, pids):
        check(not processes_of(pid), f"{node.name} (pid {pid}) left processes: {processes_of(pid)}")
        check(not cgroups_of(pid), f"{node.name} left cgroups: {cgroups_of(pid)}")
        check(not state_dirs(node), f"{node.name} left state directories: {state_dirs(node)}")
    log("   no process, cgroup or state directory of either node")


def main():
    ensure_nginx()
    ensure_binary()
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    nodes = [Node("node-a"), Node("node-b")]
    nginx = Nginx(nodes)
    pids = {}
    try:
        kubernetes_rendering_is_valid()
        for node in nodes:
            node.start()
            pids[node.name] = node.proc.pid
        nginx.start()
        proxy = nginx.base
        sessions = sessions_and_fair_share(proxy)
        sse_and_files(proxy, next(s for s in sessions if node_of(s) == "node-a"))
        executions = python_executor(proxy)
        wrong_node(nodes, sessions, executions)
        kill_node_b(proxy, nodes[1], sessions)
        clean_after_kill(nodes[1], pids["node-b"])
        drain_node_a(proxy, nodes[0], next(s for s in sessions if node_of(s) == "node-a"))
        nginx.stop()
        nothing_left(nodes, [pids["node-a"], pids["node-b"]])
    except CheckFailed as e:
        log(f"FAILED: {e}")
        log(f"logs: {WORK}/*/stderr.log, {WORK}/nginx/error.log")
        return 1
    finally:
        nginx.stop()
        for node in nodes:
            node.stop()
        for node in nodes:
            if node.name in pids:
                if processes_of(pids[node.name]):
                    for leftover in processes_of(pids[node.name]):
                        try:
                            os.kill(leftover, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
    log(f"all checks passed in {time.monotonic() - STARTED:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
