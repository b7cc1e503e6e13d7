"""The in-process pool: replpool's core inside this Python process."""

from __future__ import annotations

import atexit
import json
import sys
import weakref
from typing import Any, Iterable, Mapping

from . import _native
from ._session import Session

_open_pools: "weakref.WeakSet[Pool]" = weakref.WeakSet()


class Pool:
    """Warm sessions without a server.

    Workers are this interpreter (`sys.executable`) unless `python` names another, with
    `preload` imported once per worker (default: numpy as np, pandas as pd, matplotlib.pyplot
    as plt). `warm_workers` are kept started ahead of need. `limits` is the server's
    `[limits]` section as a dict, fields named as in config.toml (`{"memory_mb": 1024,
    "cpu_seconds": 10}`); the same fields may be given as keywords. An unknown field raises
    ReplpoolError naming it: the core's configuration is the one list of limits.
    Workers run as this process's user, on the machine's network (`network="none"` gives them
    a namespace with only loopback: as root, or through a user namespace).

    The pool runs its sessions on a background thread; calls release the GIL while they wait.
    `close()` (or leaving a `with` block) ends every session and worker; so does the pool being
    garbage-collected, and the interpreter exiting.
    """

    def __init__(
        self,
        python: str | None = None,
        preload: Iterable[str] | None = None,
        warm_workers: int = 2,
        *,
        network: str = "host",
        default_timeout: float | None = None,
        limits: Mapping[str, Any] | None = None,
        **limit_fields: Any,
    ):
        settings: dict[str, Any] = {
            "python": {"executable": python or sys.executable},
            "pool": {"warm_workers": warm_workers},
            "limits": {**(limits or {}), **limit_fields},
            # The caller's own code, as the caller: no user change, no cgroups of ours, and the
            # caller's files in view.
            "sandbox": {"user": "", "session_uids": "", "network": network, "cgroups": False, "filesystem": "host"},
        }
        if preload is not None:
            settings["python"]["preload"] = list(preload)
        if default_timeout is not None:
            ms = max(1, int(default_timeout * 1000))
            settings["execution"] = {"default_timeout_ms": ms, "max_timeout_ms": max(ms, 600_000)}
        self._native = _native.NativePool(json.dumps(settings))
        _open_pools.add(self)

    def session(self) -> Session:
        """A new session (end it with `close()` or a `with` block)."""
        return Session(self._native)

    def close(self) -> None:
        """Ends every session and worker of the pool. Idempotent."""
        self._native.close()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@atexit.register
def _close_open_pools() -> None:
    # Workers die with this process anyway (their death signal); closing first ends them in
    # order, and their files with them.
    for pool in list(_open_pools):
        pool.close()
