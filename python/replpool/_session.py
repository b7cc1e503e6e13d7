"""A session: one worker, one namespace, kept between calls. The same class serves a `Pool`
and a `Client`; only the backend it talks to differs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from typing import Any, Protocol

from ._execution import Execution
from ._native import Timeout


class Backend(Protocol):
    """What a session needs of a pool or a server."""

    def create_session(self) -> str: ...
    def execute(self, session: str, code: str, stdin: str | None, timeout_ms: int | None) -> str | dict: ...
    def session_info(self, session: str) -> str | dict: ...
    def interrupt(self, session: str) -> bool: ...
    def reset(self, session: str) -> None: ...
    def delete_session(self, session: str) -> None: ...
    def put_file(self, session: str, path: str, data: bytes) -> None: ...
    def get_file(self, session: str, path: str) -> bytes: ...


_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _threads() -> concurrent.futures.ThreadPoolExecutor:
    """The threads `aexecute` waits on. Waiting releases the GIL, so many can wait at once; the
    default executor (a handful of threads) would queue concurrent sessions behind each other."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="replpool")
        return _executor


class Session:
    """A replpool session. Use it as a context manager, or call `close()`, to end it."""

    def __init__(self, backend: Backend, session_id: str | None = None):
        self._backend = backend
        self.id = session_id if session_id is not None else backend.create_session()
        self._closed = False

    def execute(
        self,
        code: str,
        stdin: str | None = None,
        timeout: float | None = None,
        *,
        raise_on_timeout: bool = False,
    ) -> Execution:
        """Runs `code` in the session; `timeout` in seconds (the server's default otherwise).

        An error in the code is an `Execution` with `status == "error"`, not an exception. A
        deadline reached is `status == "timeout"` (the session stays usable), or raises
        `replpool.Timeout` with `raise_on_timeout=True`.
        """
        timeout_ms = None if timeout is None else max(1, int(timeout * 1000))
        reply = self._backend.execute(self.id, code, stdin, timeout_ms)
        execution = Execution.from_reply(reply if isinstance(reply, dict) else _json(reply))
        if raise_on_timeout and execution.status == "timeout":
            raise Timeout(f"the execution reached its deadline ({timeout_ms} ms)")
        return execution

    async def aexecute(self, code: str, stdin: str | None = None, timeout: float | None = None, **kwargs: Any) -> Execution:
        """`execute` for asyncio: the wait happens on a thread, the event loop runs on."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self.execute, code, stdin, timeout, **kwargs)
        return await loop.run_in_executor(_threads(), call)

    def info(self) -> dict[str, Any]:
        """What the server's `GET /v1/sessions/{id}` says of the session: its state, and its
        usage so far (`cpu_seconds`, `memory_peak_bytes`, `executions`, `files_bytes`)."""
        info = self._backend.session_info(self.id)
        return info if isinstance(info, dict) else _json(info)

    def interrupt(self) -> bool:
        """KeyboardInterrupt in the running code; returns whether something was running."""
        return self._backend.interrupt(self.id)

    def reset(self) -> None:
        """A fresh namespace on a fresh worker; the files stay."""
        self._backend.reset(self.id)

    def upload(self, path: str, data: bytes | str) -> None:
        """Writes a file into the session's working directory (the code's cwd)."""
        self._backend.put_file(self.id, path, data.encode() if isinstance(data, str) else bytes(data))

    def download(self, path: str) -> bytes:
        """A file of the session's working directory."""
        return self._backend.get_file(self.id, path)

    def close(self) -> None:
        """Ends the session and its worker. Idempotent."""
        if not self._closed:
            self._closed = True
            try:
                self._backend.delete_session(self.id)
            except Exception:  # noqa: BLE001 - already gone (evicted, pool closed): nothing to end
                pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<replpool.Session {self.id}>"


def _json(text: str) -> dict:
    import json

    return json.loads(text)
