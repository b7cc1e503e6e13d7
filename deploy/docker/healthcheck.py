"""The image's HEALTHCHECK: healthy when GET /healthz on the server's own address answers 200.

The address is the effective server.bind, asked of `replpool config` (the mounted file and
REPLPOOL_* variables applied), so that a changed port or bind is followed. An unspecified
address (0.0.0.0, ::) is reached through loopback. Standard library only: the image has no curl.
"""

import subprocess
import sys
import tomllib
import urllib.request


def main() -> int:
    shown = subprocess.run(
        ["replpool", "config"], capture_output=True, text=True, timeout=10, check=True
    )
    bind = tomllib.loads(shown.stdout)["server"]["bind"]
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5) as reply:
        return 0 if reply.status == 200 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # any failure is "unhealthy", said in one line in docker inspect
        print(f"unhealthy: {e}", file=sys.stderr)
        sys.exit(1)
