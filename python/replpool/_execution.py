"""The reply to an execution, the same from a pool and from a server."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Execution:
    """What running one piece of code gave.

    `result` and each entry of `display` are MIME bundles (`{"text/plain": ..., "image/png":
    <base64>, ...}`); `error` is `{"ename", "evalue", "traceback"}` or None. `category` says
    what kind of failure it was (`syntax`, `runtime`, `timeout`, `interrupted`, `memory`,
    `cpu_limit`, `output_limit`, `disk_quota`, `worker_died`, `unavailable`), None when the
    status is ok. `cpu_ms` is the CPU time the code used (None when its worker died).
    """

    status: str
    execution_count: int
    stdout: str = ""
    stderr: str = ""
    result: dict[str, Any] | None = None
    display: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    category: str | None = None
    duration_ms: float = 0.0
    cpu_ms: float | None = None
    mode: str = "warm"
    truncated: bool = False
    session_reset: bool = False

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> "Execution":
        return cls(
            status=reply["status"],
            execution_count=int(reply["execution_count"]),
            stdout=reply.get("stdout", ""),
            stderr=reply.get("stderr", ""),
            result=reply.get("result"),
            display=list(reply.get("display") or []),
            error=reply.get("error"),
            category=reply.get("category"),
            duration_ms=float(reply.get("duration_ms", 0.0)),
            cpu_ms=None if reply.get("cpu_ms") is None else float(reply["cpu_ms"]),
            mode=reply.get("mode", "warm"),
            truncated=bool(reply.get("truncated", False)),
            session_reset=bool(reply.get("session_reset", False)),
        )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def text(self) -> str | None:
        """The result's `text/plain` (its repr), if there is a result."""
        return None if self.result is None else self.result.get("text/plain")

    def images(self, mime: str = "image/png") -> list[bytes]:
        """The images among the displayed bundles (figures), decoded."""
        return [base64.b64decode(d[mime]) for d in self.display if mime in d]
