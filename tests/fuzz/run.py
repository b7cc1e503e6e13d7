#!/usr/bin/env python3
"""Schemathesis against a live replpool, from its own /openapi.json (issue 20; in `make test`).

Starts the server (target/release/replpool unless --binary says otherwise) with a temporary
config on a free loopback port, with a bearer token, the scripts of tests/fixtures/scripts and
short deadlines; validates the document (tests/openapi/validate.py); then runs schemathesis,
bounded: a fixed number of examples per operation, a fixed seed, no example database (so a run
is the same on every machine), every phase (the schema's examples, its coverage of each
parameter's edges, random fuzzing, and the stateful phase, which follows the document's links
from session creation to the session routes with real ids). Checks: no 5xx, every status
declared, every JSON body valid against the schema; a request that takes longer than
--request-timeout fails the run (no hang), and so does a run longer than --budget.
Ends the server by its pid whatever happens. Exit status 0 when schemathesis found nothing.

    python tests/fuzz/run.py [--binary PATH] [--examples N] [--seed N] [--report DIR]
"""

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOKEN = "fuzz-token-0123456789abcdef"
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance"


def config(python, scripts):
    return f"""
[python]
executable = "{python}"

[pool]
warm_workers = 2
lean_workers = 2

[sessions]
max = 16
queue_depth = 4

[execution]
default_timeout_ms = 5000
max_timeout_ms = 20000

[judge]
run_timeout_ms = 5000
compile_timeout_ms = 20000

[scripts]
dir = "{scripts}"

[auth]
tokens = ["{TOKEN}"]

[sandbox]
network = "host"

[packages]
# Random requirement names must never reach the package index (each a download, or a wait on
# it): every one is refused first, 403 package_not_allowed (or 400 invalid_requirement).
allow = []
"""


class Server:
    """A replpool server of this run's; `stop` ends it by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, binary, config_path):
        env = dict(os.environ, REPLPOOL_LOG="warn")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--bind", "127.0.0.1:0", "--config", str(config_path)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.base = None
        for line in self.process.stdout:
            if line.startswith("listening on "):
                self.base = line.removeprefix("listening on ").strip()
                break
        if self.base is None:
            self.stop()
            raise RuntimeError("the server exited before listening")
        # Drained, so that the server never blocks on a full pipe.
        threading.Thread(target=self.process.stdout.read, daemon=True).start()

    def stop(self):
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "replpool"))
    parser.add_argument("--examples", type=int, default=40, help="examples per operation")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run")
    parser.add_argument("--report", default=str(ROOT / "target" / "fuzz"), help="report directory")
    args = parser.parse_args()

    schemathesis = pathlib.Path(sys.executable).parent / "schemathesis"
    with tempfile.TemporaryDirectory(prefix="replpool-fuzz-") as tmp:
        config_path = pathlib.Path(tmp) / "config.toml"
        config_path.write_text(config(sys.executable, ROOT / "tests" / "fixtures" / "scripts"))
        server = Server(args.binary, config_path)
        try:
            print(f"==> replpool at {server.base} (pid {server.process.pid})", flush=True)
            document = f"{server.base}/openapi.json"
            validated = subprocess.run(
                [sys.executable, str(ROOT / "tests" / "openapi" / "validate.py"), document]
            )
            if validated.returncode != 0:
                return validated.returncode
            command = [
                str(schemathesis),
                "run",
                document,
                "--checks",
                CHECKS,
                "--max-examples",
                str(args.examples),
                "--seed",
                str(args.seed),
                "--generation-database",
                "none",
                "--request-timeout",
                str(args.request_timeout),
                "--header",
                f"Authorization: Bearer {TOKEN}",
                "--workers",
                "2",
                "--no-color",
                "--report",
                "junit",
                "--report-dir",
                args.report,
            ]
            started = time.monotonic()
            try:
                # In the temporary directory: schemathesis keeps a `.schemathesis/` where it runs.
                ran = subprocess.run(command, timeout=args.budget, cwd=tmp)
            except subprocess.TimeoutExpired:
                print(f"schemathesis did not finish within {args.budget} s", file=sys.stderr)
                return 1
            print(f"==> schemathesis: exit {ran.returncode} in {time.monotonic() - started:.0f} s")
            if server.process.poll() is not None:
                print(f"the server died during the run: {server.process.returncode}", file=sys.stderr)
                return 1
            return ran.returncode
        finally:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
