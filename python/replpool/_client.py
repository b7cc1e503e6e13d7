"""A client for a replpool server, with the pool's session API (standard library only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ._native import ServerError, SessionNotFound
from ._session import Session


class NodeUnavailable(SessionNotFound):
    """The node that holds the session cannot be reached: 503 `node_unavailable` from the proxy
    in front of several replpool nodes (docs/deploy.md, "Many nodes"). A session lives in its
    node's memory, so if the node ended, the session's variables and files are gone: start a
    new session (the proxy sends it to a node that is up). A `SessionNotFound`, so code that
    starts again on a missing session needs nothing new."""


# How much longer than the execution's own deadline a request may take (queueing, start-up).
_SLACK_SECONDS = 120.0


class Client:
    """Sessions on a replpool server at `url` (`http://127.0.0.1:8765`), with `token` for a
    server that has `auth.tokens`."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._timeout = timeout

    def session(self) -> Session:
        return Session(self)

    def health(self) -> dict:
        return self._json("GET", "/healthz")

    # The backend a Session talks to.

    def create_session(self) -> str:
        return self._json("POST", "/v1/sessions", {})["session_id"]

    def execute(self, session: str, code: str, stdin: str | None, timeout_ms: int | None) -> dict:
        body: dict[str, Any] = {"code": code}
        if stdin is not None:
            body["stdin"] = stdin
        if timeout_ms is not None:
            body["timeout_ms"] = timeout_ms
        wait = (timeout_ms or 600_000) / 1000 + _SLACK_SECONDS
        return self._json("POST", f"/v1/sessions/{_q(session)}/execute", body, timeout=wait)

    def session_info(self, session: str) -> dict:
        return self._json("GET", f"/v1/sessions/{_q(session)}")

    def interrupt(self, session: str) -> bool:
        return bool(self._json("POST", f"/v1/sessions/{_q(session)}/interrupt", {})["interrupted"])

    def reset(self, session: str) -> None:
        self._json("POST", f"/v1/sessions/{_q(session)}/reset", {}, timeout=_SLACK_SECONDS)

    def delete_session(self, session: str) -> None:
        self._request("DELETE", f"/v1/sessions/{_q(session)}")

    def put_file(self, session: str, path: str, data: bytes) -> None:
        self._request(
            "PUT",
            f"/v1/sessions/{_q(session)}/files/{_q(path, safe='/')}",
            data,
            {"content-type": "application/octet-stream"},
        )

    def get_file(self, session: str, path: str) -> bytes:
        return self._request("GET", f"/v1/sessions/{_q(session)}/files/{_q(path, safe='/')}")

    def _json(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"content-type": "application/json"}
        return json.loads(self._request(method, path, data, headers, timeout) or b"null")

    def _request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={**self._headers, **(headers or {})}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self._timeout) as response:
                return response.read()
        except urllib.error.HTTPError as e:
            raise _error(e.code, e.read()) from None
        except urllib.error.URLError as e:
            raise ServerError(f"cannot reach {self.url}: {e.reason}") from None


def _error(status: int, body: bytes) -> Exception:
    try:
        error = json.loads(body)["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message = "", body.decode(errors="replace")
    if code == "session_not_found":
        return SessionNotFound(message)
    if code == "node_unavailable":
        return NodeUnavailable(message)
    return ServerError(f"{status} {code}: {message}" if code else f"{status}: {message}")


def _q(text: str, safe: str = "") -> str:
    return urllib.parse.quote(text, safe=safe)
