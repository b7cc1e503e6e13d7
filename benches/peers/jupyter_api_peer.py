"""The Jupyter kernel API row of replpool's benchmark: kernel start + first cell, through the
Jupyter REST + websocket API, on replpool and on a real IPython kernel behind jupyter_server,
with the same client code on both sides (urllib for REST, websocket-client for the channels,
the default JSON framing).

Run by benches/replpool.rs with the project's venv; prints one JSON object on stdout.

    jupyter_api_peer.py N REPLPOOL_URL PRELOAD
        N samples on each side: POST /api/kernels, open its channels, execute the first cell
        and wait for its execute_reply and idle status (timed), then close and DELETE
        (untimed). replpool's first cell is `1+1` (the preload is imported already; each
        sample starts with the warm pool full, as the session-ready row's do); the IPython
        kernel's imports the preload list, then `1+1`.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import websocket

TIMEOUT = 120
TOKEN = uuid.uuid4().hex


def request(method, url, headers, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers, **{"Content-Type": "application/json"}))
    with urllib.request.urlopen(req, timeout=TIMEOUT) as response:
        text = response.read()
    return json.loads(text) if text else None


def message(msg_type, content):
    return {
        "header": {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "bench",
                   "username": "bench", "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": [],
    }


def start_and_first_cell(base, headers, code):
    """Seconds from POST /api/kernels to the first cell's reply and idle; the kernel id."""
    started = time.perf_counter()
    kernel = request("POST", f"{base}/api/kernels", headers, {"name": "python3"})
    ws_url = base.replace("http://", "ws://", 1) + f"/api/kernels/{kernel['id']}/channels"
    ws = websocket.create_connection(ws_url, timeout=TIMEOUT, header=[f"{k}: {v}" for k, v in headers.items()])
    try:
        execute = message("execute_request", {"code": code, "silent": False, "store_history": True,
                                              "user_expressions": {}, "allow_stdin": False})
        ws.send(json.dumps(execute))
        msg_id = execute["header"]["msg_id"]
        replied = idle = False
        while not (replied and idle):
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "execute_reply":
                if msg["content"]["status"] != "ok":
                    raise RuntimeError(f"first cell failed: {msg['content']}")
                replied = True
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        elapsed = time.perf_counter() - started
    finally:
        ws.close()
    request("DELETE", f"{base}/api/kernels/{kernel['id']}", headers)
    return elapsed


def wait_for_full_pool(base):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        pool = request("GET", f"{base}/healthz", {})["pool"]
        if pool.get("ready", 0) >= pool.get("target", 0):
            return
        time.sleep(0.02)
    raise RuntimeError("the pool never filled")


def die_with_parent():
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_jupyter_server(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={workdir}"]
    if os.geteuid() == 0:
        args.append("--allow-root")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=f"{workdir}/config", JUPYTER_RUNTIME_DIR=f"{workdir}/runtime")
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, preexec_fn=die_with_parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            request("GET", f"{base}/api/status", {"Authorization": f"token {TOKEN}"})
            return server, base
        except OSError:
            time.sleep(0.1)
    os.killpg(server.pid, signal.SIGKILL)
    raise RuntimeError("jupyter server did not start")


def progress(side, done, total):
    print(f"\r    jupyter api ({side}): {done}/{total}", end="", file=sys.stderr, flush=True)


def main():
    n, replpool, preload = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
    ours = []
    for i in range(n):
        wait_for_full_pool(replpool)
        ours.append(start_and_first_cell(replpool, {}, "1+1"))
        progress("replpool", i + 1, n)
    theirs = []
    with tempfile.TemporaryDirectory(prefix="replpool-bench-jupyter-api-") as workdir:
        server, base = start_jupyter_server(workdir)
        try:
            headers = {"Authorization": f"token {TOKEN}"}
            for i in range(n):
                theirs.append(start_and_first_cell(base, headers, preload + "\n1+1"))
                progress("ipykernel", i + 1, n)
        finally:
            # SIGTERM: jupyter_server shuts its kernels down on the way out.
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
    print(file=sys.stderr)
    print(json.dumps({"replpool": {"samples_s": ours}, "jupyter": {"samples_s": theirs}}))


if __name__ == "__main__":
    main()
