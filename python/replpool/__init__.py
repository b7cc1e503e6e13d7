"""replpool: warm, preloaded Python sessions.

`Pool` runs sessions inside this process (replpool's Rust core on a background thread, workers
started from this interpreter); `Client` talks to a replpool server. Both hand out sessions
with the same API, and both answer with the same `Execution`::

    import replpool

    with replpool.Pool() as pool, pool.session() as session:
        session.execute("x = 41")
        print(session.execute("x + 1").result["text/plain"])  # 42
"""

from ._native import ReplpoolError, ServerError, SessionNotFound, Timeout
from ._execution import Execution
from ._session import Session
from ._pool import Pool
from ._client import Client, NodeUnavailable

__all__ = [
    "Client",
    "Execution",
    "NodeUnavailable",
    "Pool",
    "ReplpoolError",
    "ServerError",
    "Session",
    "SessionNotFound",
    "Timeout",
]
