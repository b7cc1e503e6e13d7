"""Drives replpool's MCP server with the official MCP Python SDK (`mcp` from PyPI): one
scenario per run, over streamable HTTP (--url) or stdio (--stdio BINARY --config PATH, which
starts `replpool mcp`). Prints what it saw as one JSON object; tests/mcp.rs asserts on it.
"""

import argparse
import asyncio
import base64
import contextlib
import json
import sys

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SMALL_PLOT = """
import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(1, 1), dpi=30)
ax.plot([1, 2, 3], [1, 4, 9])
plt.show()
"""

# Noise compresses badly: a PNG of about 100 kB (under the SDK's 1 MiB limit for one SSE
# event, which resources/read must fit in).
LARGE_PLOT = """
import numpy as np
import matplotlib.pyplot as plt
rng = np.random.default_rng(0)
fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
ax.imshow(rng.random((160, 160)))
plt.show()
"""


def block(content):
    """One content block as JSON, with an image's data checked rather than copied."""
    out = {"type": content.type}
    for field in ("text", "mimeType", "uri", "name", "size"):
        value = getattr(content, field, None)
        if value is None:
            value = getattr(content, field[0].lower() + field[1:], None)
        if value is not None:
            out[field] = value
    mime = getattr(content, "mimeType", None) or getattr(content, "mime_type", None)
    if mime is not None:
        out["mimeType"] = mime
    data = getattr(content, "data", None)
    if data is not None:
        raw = base64.b64decode(data)
        out["png"] = raw.startswith(PNG_MAGIC)
        out["bytes"] = len(raw)
    uri = getattr(content, "uri", None)
    if uri is not None:
        out["uri"] = str(uri)
    return out


def result(r):
    is_error = getattr(r, "isError", None)
    if is_error is None:
        is_error = getattr(r, "is_error", False)
    structured = getattr(r, "structuredContent", None)
    if structured is None:
        structured = getattr(r, "structured_content", None)
    return {
        "is_error": bool(is_error),
        "content": [block(c) for c in r.content],
        "structured": structured,
    }


def text_of(r):
    return "".join(c.text for c in r.content if c.type == "text")


@contextlib.asynccontextmanager
async def connect(args):
    if args.url and not args.stdio:
        headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(args.url, http_client=http) as (read, write, *_):
                async with ClientSession(read, write) as session:
                    yield session
    else:
        if args.config:
            server_args = ["mcp", "--config", args.config]
        else:  # a bridge to a running server's /mcp
            server_args = ["mcp", "--url", args.bridge_url]
        params = StdioServerParameters(
            command=args.stdio, args=server_args, env={"REPLPOOL_TOKEN": args.token} if args.token else None
        )
        async with stdio_client(params) as (read, write, *_):
            async with ClientSession(read, write) as session:
                yield session


async def tour(session, out):
    tools = await session.list_tools()
    out["tools"] = {
        t.name: {
            "description": t.description,
            "schema": getattr(t, "inputSchema", None) or getattr(t, "input_schema", None),
        }
        for t in tools.tools
    }
    created = await session.call_tool("create_session", {})
    out["create"] = result(created)
    sid = (created.structured_content or {}).get("session_id")
    out["session_id"] = sid
    out["first"] = result(await session.call_tool("run_python", {"session_id": sid, "code": "x = 41"}))
    out["second"] = result(await session.call_tool("run_python", {"session_id": sid, "code": "print('x is', x)\nx + 1"}))
    out["plot"] = result(await session.call_tool("run_python", {"session_id": sid, "code": SMALL_PLOT}))
    out["error"] = result(await session.call_tool("run_python", {"session_id": sid, "code": "1 / 0"}))
    out["timeout"] = result(await session.call_tool(
        "run_python", {"session_id": sid, "code": "import time\ntime.sleep(30)", "timeout_s": 0.5}))
    out["one_shot"] = result(await session.call_tool("run_python", {"code": "print(6 * 7)"}))
    out["upload"] = result(await session.call_tool(
        "upload_file", {"session_id": sid, "path": "data/hello.txt", "content": "hello, file"}))
    out["list"] = result(await session.call_tool("list_files", {"session_id": sid}))
    out["read"] = result(await session.call_tool("read_file", {"session_id": sid, "path": "data/hello.txt"}))
    out["reset"] = result(await session.call_tool("reset_session", {"session_id": sid}))
    out["after_reset"] = result(await session.call_tool("run_python", {"session_id": sid, "code": "x"}))
    out["close"] = result(await session.call_tool("close_session", {"session_id": sid}))
    out["closed"] = result(await session.call_tool("run_python", {"session_id": sid, "code": "1"}))


async def large_figure(session, out):
    created = await session.call_tool("create_session", {})
    sid = created.structured_content["session_id"]
    out["session_id"] = sid
    ran = await session.call_tool("run_python", {"session_id": sid, "code": LARGE_PLOT})
    out["run"] = result(ran)
    links = [c for c in ran.content if c.type == "resource_link"]
    if links:
        read = await session.read_resource(links[0].uri)
        out["read"] = [
            {
                "uri": str(c.uri),
                "mimeType": getattr(c, "mime_type", None) or getattr(c, "mimeType", None),
                "png": base64.b64decode(c.blob).startswith(PNG_MAGIC),
                "bytes": len(base64.b64decode(c.blob)),
            }
            for c in read.contents
        ]
    try:
        await session.read_resource(f"replpool://sessions/{sid}/outputs/999/0")
        out["missing"] = "read"
    except Exception as e:  # the SDK raises the JSON-RPC error
        out["missing"] = {"error": type(e).__name__, "message": str(e),
                          "code": getattr(getattr(e, "error", None), "code", None)}


async def cancel(session, out):
    created = await session.call_tool("create_session", {})
    sid = created.structured_content["session_id"]
    out["session_id"] = sid
    progress = []
    got_progress = anyio.Event()

    async def on_progress(value, total, message):
        progress.append({"progress": value, "message": message})
        got_progress.set()

    code = "import time\nprint('started', flush=True)\ntime.sleep(120)"
    async with anyio.create_task_group() as tg:
        async def call():
            await session.call_tool("run_python", {"session_id": sid, "code": code},
                                    progress_callback=on_progress)
            out["call"] = "returned"

        tg.start_soon(call)
        with anyio.fail_after(60):
            await got_progress.wait()
        # Abandoning the call sends notifications/cancelled.
        tg.cancel_scope.cancel()
    out["progress"] = progress
    # The next cell runs at once: the sleeping one was interrupted.
    with anyio.fail_after(60):
        out["after"] = result(await session.call_tool(
            "run_python", {"session_id": sid, "code": "print('after')"}))


WHICH_PYTHON = "import sys\nprint(sys.executable, 'np' in globals())"


async def pythons(session, out, python):
    """create_session and a one-shot on the interpreter `python` names; an unknown one; and
    `python` beside a session_id."""
    created = await session.call_tool("create_session", {"python": python})
    out["create"] = result(created)
    sid = (created.structured_content or {}).get("session_id")
    out["which"] = result(await session.call_tool("run_python", {"session_id": sid, "code": WHICH_PYTHON}))
    out["unknown"] = result(await session.call_tool("create_session", {"python": "no-such-python"}))
    out["one_shot"] = result(await session.call_tool("run_python", {"code": WHICH_PYTHON, "python": python}))
    out["unknown_one_shot"] = result(await session.call_tool(
        "run_python", {"code": WHICH_PYTHON, "python": "no-such-python"}))
    out["with_session"] = result(await session.call_tool(
        "run_python", {"session_id": sid, "code": "1", "python": python}))
    await session.call_tool("close_session", {"session_id": sid})


async def call(session, out, tool, arguments):
    out["result"] = result(await session.call_tool(tool, arguments))


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["tour", "large_figure", "cancel", "pythons", "call"])
    parser.add_argument("--url")
    parser.add_argument("--token")
    parser.add_argument("--stdio", help="the replpool binary, for `replpool mcp`")
    parser.add_argument("--config", help="`replpool mcp --config`: the core in-process")
    parser.add_argument("--bridge-url", help="`replpool mcp --url`: a bridge to a server")
    parser.add_argument("--tool")
    parser.add_argument("--arguments", default="{}")
    parser.add_argument("--python", help="`pythons`: the interpreter to choose")
    args = parser.parse_args()
    out = {}
    async with connect(args) as session:
        init = await session.initialize()
        info = getattr(init, "serverInfo", None) or getattr(init, "server_info", None)
        out["server"] = info.name if info else None
        if args.scenario == "tour":
            await tour(session, out)
        elif args.scenario == "large_figure":
            await large_figure(session, out)
        elif args.scenario == "cancel":
            await cancel(session, out)
        elif args.scenario == "pythons":
            await pythons(session, out, args.python)
        else:
            await call(session, out, args.tool, json.loads(args.arguments))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    anyio.run(main)
