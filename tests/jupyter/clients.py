"""Real Jupyter clients against replpool's Jupyter kernel API, run by tests/jupyter.rs.

    clients.py nbclient REPLPOOL_URL TOKEN
        nbclient executes a notebook of several cells through jupyter_server's gateway
        kernel manager (GatewayKernelManager: REST + the channels' websocket), allow_errors
        on; prints the executed cells' outputs as JSON.
    clients.py nbclient-spec REPLPOOL_URL TOKEN SPEC
        The same, with the kernel spec SPEC: one cell, `sys.executable`; prints its outputs.
    clients.py gateway JUPYTER_URL JUPYTER_TOKEN
        Against a `jupyter server --gateway-url=<replpool>`: its kernel specs (as that server
        lists them from replpool), then a kernel started through it and a cell run over its
        own websocket (jupyter-kernel-client); prints what it saw as JSON.
    clients.py protocol REPLPOOL_URL -
        Each message of the channels with a plain websocket client (websocket-client);
        prints what each was answered with as JSON.

TOKEN "-" means none. Exits non-zero, with the reason on stderr, when a client fails.
"""

import json
import sys

import nbformat


def notebook():
    cells = [
        "df = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})\ndf",
        "print('hello')\ndf['a'].sum()",
        "import sys\nprint('to stderr', file=sys.stderr)",
        "plt.plot([1, 2, 3])\nplt.show()",
        "1 / 0",
        "x = 41\nx + 1",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def summarize(output):
    """An output, reduced to what the test compares: its type and its texts, and which MIME
    types its data has (a PNG's bytes and an HTML table's markup are not compared)."""
    kind = output["output_type"]
    summary = {"output_type": kind}
    if kind == "stream":
        summary["name"] = output["name"]
        summary["text"] = output["text"]
    elif kind in ("execute_result", "display_data"):
        summary["mime"] = sorted(output["data"])
        summary["text/plain"] = output["data"].get("text/plain")
        # Tables and charts as JSON (issue 21 §3) reach the front end as JSON values.
        table = output["data"].get("application/vnd.dataresource+json")
        if table is not None:
            summary["table_fields"] = [f["name"] for f in table["schema"]["fields"]]
        chart = output["data"].get("application/vnd.replpool.chart+json")
        if chart is not None:
            summary["chart_types"] = [c["type"] for c in chart["charts"]]
        if kind == "execute_result":
            summary["execution_count"] = output["execution_count"]
    elif kind == "error":
        summary["ename"] = output["ename"]
        summary["evalue"] = output["evalue"]
        summary["traceback_mentions_cell"] = any("1 / 0" in line for line in output["traceback"])
    return summary


def run_nbclient(url, token):
    from jupyter_server.gateway.gateway_client import GatewayClient
    from jupyter_server.gateway.managers import GatewayKernelManager
    from nbclient import NotebookClient

    GatewayClient.instance(url=url, auth_token=None if token == "-" else token, request_timeout=60.0)
    nb = notebook()
    client = NotebookClient(
        nb,
        kernel_manager_class=GatewayKernelManager,
        kernel_name="python3",
        allow_errors=True,
        timeout=60,
        startup_timeout=60,
    )
    client.execute()
    return {
        "cells": [
            {"execution_count": cell.get("execution_count"), "outputs": [summarize(o) for o in cell.outputs]}
            for cell in nb.cells
        ]
    }


def run_nbclient_spec(url, token, spec):
    """One cell through GatewayKernelManager on the kernel spec `spec`."""
    from jupyter_server.gateway.gateway_client import GatewayClient
    from jupyter_server.gateway.managers import GatewayKernelManager
    from nbclient import NotebookClient

    GatewayClient.instance(url=url, auth_token=None if token == "-" else token, request_timeout=60.0)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import sys\nsys.executable")]
    nb.metadata["kernelspec"] = {"name": spec, "display_name": spec, "language": "python"}
    client = NotebookClient(
        nb,
        kernel_manager_class=GatewayKernelManager,
        kernel_name=spec,
        timeout=60,
        startup_timeout=60,
    )
    # GatewayKernelManager.start_kernel reads the spec from its own arguments (default
    # "python3"), not from the manager's kernel_name: nbclient hands them through execute().
    client.execute(kernel_name=spec)
    return {"outputs": [summarize(o) for o in nb.cells[0].outputs]}


def run_gateway(url, token):
    import urllib.request

    from jupyter_kernel_client import KernelHttpManager

    request = urllib.request.Request(f"{url}/api/kernelspecs", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        specs = json.load(response)
    manager = KernelHttpManager(server_url=url, token=token)
    manager.start_kernel(name="python3", timeout=60)
    try:
        client = manager.client
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            outputs = []
            reply = client.execute_interactive(
                "print('through the gateway')\n6 * 7", output_hook=outputs.append, timeout=60
            )
        finally:
            client.stop_channels()
        kernel_id = manager.kernel["id"]
    finally:
        manager.shutdown_kernel(now=True)
    return {
        "default": specs["default"],
        "specs": {name: spec["spec"]["display_name"] for name, spec in specs["kernelspecs"].items()},
        "kernel_id": kernel_id,
        "status": reply["content"]["status"],
        "outputs": [
            {"msg_type": m["msg_type"], "content": {k: m["content"][k] for k in ("name", "text", "data") if k in m["content"]}}
            for m in outputs
            if m["msg_type"] in ("stream", "execute_result", "display_data", "error")
        ],
    }


def run_protocol(url, token):
    """The channels' messages one by one, with a plain websocket client: what each request is
    answered with, interrupt, stop_on_error, restart and shutdown over the control channel."""
    import urllib.request
    import uuid

    import websocket

    def rest(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as response:
            text = response.read()
        return json.loads(text) if text else None

    kernel = rest("POST", "/api/kernels", {"name": "python3"})
    ws = websocket.create_connection(
        url.replace("http://", "ws://", 1) + f"/api/kernels/{kernel['id']}/channels", timeout=60
    )

    def send(msg_type, content, channel="shell"):
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "test",
                  "username": "test", "date": "", "version": "5.3"}
        ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {},
                            "content": content, "channel": channel, "buffers": []}))
        return header["msg_id"]

    def until(msg_id, done):
        """The messages parented to msg_id, up to the one `done` accepts, as (channel, type,
        content)."""
        seen = []
        while True:
            msg = json.loads(ws.recv())
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append((msg["channel"], msg["header"]["msg_type"], msg["content"]))
            if done(msg):
                return seen

    def reply_and_idle(msg_id):
        got = {"reply": False, "idle": False}

        def done(msg):
            if msg["header"]["msg_type"].endswith("_reply"):
                got["reply"] = True
            if msg["header"]["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                got["idle"] = True
            return got["reply"] and got["idle"]

        return until(msg_id, done)

    result = {}
    for msg_type, content in [
        ("kernel_info_request", {}),
        ("comm_info_request", {}),
        ("complete_request", {"code": "pri", "cursor_pos": 3}),
        ("inspect_request", {"code": "print", "cursor_pos": 5, "detail_level": 0}),
        ("is_complete_request", {"code": "for x in y:"}),
    ]:
        result[msg_type] = reply_and_idle(send(msg_type, content))
    result["execute"] = reply_and_idle(send("execute_request", {"code": "x = 1\nx + 1", "silent": False}))
    result["silent"] = reply_and_idle(send("execute_request", {"code": "print('quiet')\n5", "silent": True}))
    result["input"] = reply_and_idle(send("execute_request", {"code": "input()", "allow_stdin": True}))
    result["history_request"] = reply_and_idle(send("history_request", {"hist_access_type": "tail", "n": 2, "output": False, "raw": True}))

    # stop_on_error: what was queued behind a failing cell is aborted. The cell fails only once
    # the kernel has read the request queued behind it: a control request sent after it is
    # answered (messages are read in order), then a file the cell waits for is written.
    node_hex, random = kernel["id"].split("_")
    session = bytes.fromhex(node_hex).decode() + "." + random.replace("-", "")
    failing = send("execute_request", {
        "code": "import os, time\nwhile not os.path.exists('go'):\n    time.sleep(0.01)\nraise ValueError('no')",
        "stop_on_error": True,
    })
    queued = send("execute_request", {"code": "y = 1"})
    reply_and_idle(send("kernel_info_request", {}, channel="control"))
    rest("PUT", f"/v1/sessions/{session}/files/go", {})
    result["failing"] = reply_and_idle(failing)
    result["aborted"] = reply_and_idle(queued)

    # Interrupt over control, once the cell is seen running (its first output).
    running = send("execute_request", {"code": "import time\nprint('started', flush=True)\ntime.sleep(60)"})
    until(running, lambda m: m["header"]["msg_type"] == "stream")
    result["interrupt_request"] = reply_and_idle(send("interrupt_request", {}, channel="control"))
    result["interrupted"] = reply_and_idle(running)

    # Restart over control: the namespace is gone, the kernel is the same.
    result["restart"] = reply_and_idle(send("shutdown_request", {"restart": True}, channel="control"))
    result["after_restart"] = reply_and_idle(send("execute_request", {"code": "x"}))

    # Shutdown over control: the reply, `dead`, then the socket closes and the kernel is gone.
    shutdown = send("shutdown_request", {"restart": False}, channel="control")
    result["shutdown"] = until(shutdown, lambda m: m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "dead")
    try:
        while ws.recv():
            pass
        result["closed"] = True
    except websocket.WebSocketConnectionClosedException:
        result["closed"] = True
    result["kernel_id"] = kernel["id"]
    return result


def main():
    mode, url, token = sys.argv[1:4]
    if mode == "nbclient":
        result = run_nbclient(url, token)
    elif mode == "nbclient-spec":
        result = run_nbclient_spec(url, token, sys.argv[4])
    elif mode == "gateway":
        result = run_gateway(url, token)
    elif mode == "protocol":
        result = run_protocol(url, token)
    else:
        sys.exit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
