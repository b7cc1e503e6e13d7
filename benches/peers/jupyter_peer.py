"""The Jupyter peer of replpool's benchmark: the same workloads, on IPython kernels driven
with jupyter_client over their own protocol (start the kernel, execute, wait for idle).

Run by benches/replpool.rs with the project's venv; prints one JSON object on stdout.

    jupyter_peer.py ready N PRELOAD            kernel start + first cell, N times
    jupyter_peer.py exec N PRELOAD SETUP CODE  N executions of CODE in one kernel (for a plot:
                                               also the last PNG's size and the kernel's
                                               plot settings)
    jupyter_peer.py throughput C SECONDS PRELOAD  trivial executions/s over C kernels
    jupyter_peer.py memory K PRELOAD           PSS per idle kernel with K kernels
"""

import base64
import itertools
import json
import os
import struct
import sys
import tempfile
import threading
import time

from jupyter_client.manager import KernelManager

TIMEOUT = 120


SOCKETS = tempfile.mkdtemp(prefix="replpool-bench-jupyter-")
KERNELS = itertools.count()


def start_kernel():
    # IPC sockets: the fastest local transport jupyter_client offers (and no TCP warning).
    manager = KernelManager(
        kernel_name="python3", transport="ipc", ip=os.path.join(SOCKETS, f"k{next(KERNELS)}")
    )
    manager.start_kernel()
    client = manager.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=TIMEOUT)
    return manager, client


def stop_kernel(manager, client):
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def run(client, code, want_png=False, outputs=None):
    """Executes code and waits until the kernel is idle again; returns the reply. `outputs`, a
    dict, receives the last PNG (base64) as "png" and the stdout as "stdout"."""
    got_png = []
    stdout = []

    def hook(msg):
        content = msg["content"]
        if msg["msg_type"] in ("display_data", "execute_result") and "image/png" in content.get("data", {}):
            got_png.append(content["data"]["image/png"])
        elif msg["msg_type"] == "stream" and content.get("name") == "stdout":
            stdout.append(content.get("text", ""))

    reply = client.execute_interactive(code, timeout=TIMEOUT, output_hook=hook)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content']}")
    if want_png and not got_png:
        raise RuntimeError("no PNG came back")
    if outputs is not None:
        outputs["png"] = got_png[-1] if got_png else None
        outputs["stdout"] = "".join(stdout)
    return reply


# What decides a figure's PNG in the kernel: matplotlib's settings and the inline backend's.
PLOT_SETTINGS = """
import json as _json, matplotlib as _mpl
from matplotlib_inline.backend_inline import InlineBackend as _InlineBackend
_inline = _InlineBackend.instance()
print(_json.dumps({
    "rc": {
        "backend": _mpl.get_backend(),
        "figure.figsize": list(_mpl.rcParams["figure.figsize"]),
        "figure.dpi": _mpl.rcParams["figure.dpi"],
        "savefig.dpi": str(_mpl.rcParams["savefig.dpi"]),
        "savefig.bbox": str(_mpl.rcParams["savefig.bbox"]),
    },
    "print_figure_kwargs": dict(_inline.print_figure_kwargs),
    "figure_formats": sorted(_inline.figure_formats),
}))
"""


def png_facts(b64):
    """Pixel size (from the IHDR chunk) and bytes of a base64 PNG."""
    data = base64.b64decode(b64)
    width, height = struct.unpack(">II", data[16:24])
    return {"width": width, "height": height, "bytes": len(data)}


def ready(n, preload):
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        manager, client = start_kernel()
        run(client, preload + "\n1+1")
        samples.append(time.perf_counter() - started)
        stop_kernel(manager, client)
        progress(len(samples), n)
    return {"samples_s": samples}


def execute(n, preload, setup, code):
    manager, client = start_kernel()
    try:
        run(client, preload)
        run(client, setup)
        want_png = "plt." in code
        samples = []
        outputs = {}
        for i in range(n):
            started = time.perf_counter()
            run(client, code, want_png, outputs)
            samples.append(time.perf_counter() - started)
            if i % 500 == 0:
                progress(i, n)
        result = {"samples_s": samples}
        if want_png:
            result["png"] = png_facts(outputs["png"])
            run(client, PLOT_SETTINGS, outputs=outputs)
            result["settings"] = json.loads(outputs["stdout"])
        return result
    finally:
        stop_kernel(manager, client)


def throughput(c, seconds, preload):
    kernels = [start_kernel() for _ in range(c)]
    try:
        for _, client in kernels:
            run(client, preload)
        counts = [0] * c
        stop = time.perf_counter() + seconds

        def loop(i, client):
            while time.perf_counter() < stop:
                run(client, "1+1")
                counts[i] += 1

        started = time.perf_counter()
        threads = [threading.Thread(target=loop, args=(i, cl)) for i, (_, cl) in enumerate(kernels)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        return {"ops": sum(counts), "seconds": elapsed}
    finally:
        for manager, client in kernels:
            stop_kernel(manager, client)


def pss_bytes(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss line")


def memory(k, preload):
    kernels = [start_kernel() for _ in range(k)]
    try:
        for _, client in kernels:
            run(client, preload + "\n1+1")
        total = sum(pss_bytes(manager.provisioner.process.pid) for manager, _ in kernels)
        return {"pss_bytes_per_kernel": total / k, "kernels": k}
    finally:
        for manager, client in kernels:
            stop_kernel(manager, client)


def progress(done, total):
    print(f"    jupyter: {done}/{total}", file=sys.stderr, flush=True)


def main(argv):
    command = argv[0]
    if command == "ready":
        result = ready(int(argv[1]), argv[2])
    elif command == "exec":
        result = execute(int(argv[1]), argv[2], argv[3], argv[4])
    elif command == "throughput":
        result = throughput(int(argv[1]), float(argv[2]), argv[3])
    elif command == "memory":
        result = memory(int(argv[1]), argv[2])
    else:
        raise SystemExit(f"unknown command {command!r}\n{__doc__}")
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    # Kernels inherit this environment: the same BLAS threads as replpool's workers, and the
    # inline backend so that figures come back as PNG like replpool's.
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        code = main(sys.argv[1:])
    finally:
        import shutil

        shutil.rmtree(SOCKETS, ignore_errors=True)
    sys.exit(code)
