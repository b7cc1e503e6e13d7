"""Real Jupyter clients against replpool's Jupyter kernel API, run by tests/jupyter.rs.

    clients.py nbclient REPLPOOL_URL TOKEN
        nbclient executes a notebook of several cells through jupyter_server's gateway
        kernel manager (GatewayKernelManager: REST + the channels' websocket), allow_errors
        on; prints the executed cells' outputs as JSON.
    clients.py gateway JUPYTER_URL JUPYTER_TOKEN
        Against a `jupyter server --gateway-url=<replpool>`: its kernel specs (as that server
        lists them from replpool), then a kernel started through it and a cell run over its
        own websocket (jupyter-kernel-client); prints what it saw as JSON.

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


def main():
    mode, url, token = sys.argv[1:4]
    if mode == "nbclient":
        result = run_nbclient(url, token)
    elif mode == "gateway":
        result = run_gateway(url, token)
    else:
        sys.exit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
