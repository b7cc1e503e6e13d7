"""Fixtures: one in-process pool for the module's tests, and a real replpool server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import replpool

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pool():
    with replpool.Pool(warm_workers=2) as p:
        yield p


@pytest.fixture(scope="session")
def server_url():
    """A real server (the release binary `make test` built), ended by pid afterwards.

    Started as tests/common/launcher.rs starts the Rust tests' and the benchmark's servers:
    `serve --bind 127.0.0.1:0 --config FILE` with REPLPOOL_LOG=warn, the URL from its
    `listening on` line, stdout drained after, SIGTERM then SIGKILL after a grace. Its config
    is the Rust tests' too (tests/common write_config): this interpreter as the workers', on
    the host network (the client is not about the sandbox, and it runs as anyone).
    """
    binary = Path(os.environ.get("REPLPOOL_BINARY", REPO / "target" / "release" / "replpool"))
    if not binary.exists():
        pytest.fail(f"{binary} is missing: build it first (make build)")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(
            f'[python]\nexecutable = "{sys.executable}"\n\n[pool]\nwarm_workers = 2\n\n'
            '[sandbox]\nnetwork = "host"\n'
        )
        server = subprocess.Popen(
            [str(binary), "serve", "--bind", "127.0.0.1:0", "--config", str(config)],
            stdout=subprocess.PIPE,
            env={**os.environ, "REPLPOOL_LOG": "warn"},
            text=True,
        )
        try:
            url = None
            for line in server.stdout:
                match = re.match(r"listening on (\S+)", line)
                if match:
                    url = match.group(1)
                    break
            assert url, "the server did not start"
            # Keep draining stdout so that the server never blocks on a full pipe.
            threading.Thread(target=server.stdout.read, daemon=True).start()
            yield url
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
