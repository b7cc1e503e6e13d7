"""`Client` against a real server gives what `Pool` gives, for the same cells."""

from __future__ import annotations

import dataclasses
import time

import pytest

import replpool
from replpool._client import _error

CELLS = [
    "x = 6",
    "x * 7",
    "print('out'); import sys; print('err', file=sys.stderr)",
    "1 / 0",
    "df = pd.DataFrame({'a': [1, 2]}); df.a.sum()",
    "display({'k': 1})",
    "int(input())",
]


def comparable(execution: replpool.Execution) -> dict:
    fields = dataclasses.asdict(execution)
    del fields["duration_ms"]  # timing differs by nature
    cpu_ms = fields.pop("cpu_ms")  # so does the CPU time
    assert cpu_ms is not None and cpu_ms >= 0, execution
    return fields


def run(session: replpool.Session) -> list[dict]:
    return [comparable(session.execute(code, stdin="5\n")) for code in CELLS]


def test_client_and_pool_give_the_same_results(pool, server_url):
    client = replpool.Client(server_url)
    with client.session() as remote, pool.session() as local:
        assert run(remote) == run(local)


def test_client_errors_are_the_packages(server_url):
    client = replpool.Client(server_url)
    s = client.session()
    s.close()
    with pytest.raises(replpool.SessionNotFound):
        s.execute("1")
    with client.session() as s, pytest.raises(replpool.ServerError):
        s.download("../escape")
    with pytest.raises(replpool.ServerError, match="cannot reach"):
        replpool.Client("http://127.0.0.1:9").session()


def test_a_node_that_cannot_be_reached_is_a_lost_session():
    # What nginx answers in front of several nodes (deploy/nginx) for a session of a node that
    # is down; tests/cluster/run.py gets it from a real nginx after a kill -9.
    body = (b'{"error":{"code":"node_unavailable","message":"node node-b cannot be reached: '
            b'if it ended, its sessions are lost; start a new session"}}')
    error = _error(503, body)
    assert isinstance(error, replpool.NodeUnavailable)
    assert isinstance(error, replpool.SessionNotFound)
    assert "node-b" in str(error)
    other = _error(503, b'{"error":{"code":"no_node_ready","message":"no replpool node is ready"}}')
    assert type(other) is replpool.ServerError
    assert str(other) == "503 no_node_ready: no replpool node is ready"


def test_client_files_and_timeout(server_url):
    with replpool.Client(server_url).session() as s:
        s.upload("in.txt", b"abc")
        assert s.execute("open('in.txt').read()").text == "'abc'"
        assert s.download("in.txt") == b"abc"
        r = s.execute("import time; time.sleep(30)", timeout=0.5)
        assert r.status == "timeout"
        assert s.execute("1 + 1").text == "2"


def test_client_sessions_tell_what_failed_and_what_they_used(server_url):
    with replpool.Client(server_url).session() as s:
        r = s.execute("x = (")
        assert (r.status, r.category, r.error["ename"]) == ("error", "syntax", "SyntaxError")
        r = s.execute("open('f.bin', 'wb').write(b'x' * 100_000)")
        assert (r.status, r.category) == ("ok", None)
        deadline = time.monotonic() + 10
        info = s.info()
        # Where the quota is measured by a walk (not root), it follows the reply.
        while info["files_bytes"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
            info = s.info()
        assert info["executions"] == 2
        assert info["files_bytes"] >= 100_000
        assert info["cpu_seconds"] > 0
        assert info["memory_peak_bytes"] > 0
