"""`make test-image`: the image under each environment of docs/deploy.md's isolation table.

For each environment: run the container (--network host, the server bound to a free port of
127.0.0.1: all traffic stays on loopback; a token given as REPLPOOL_AUTH_TOKENS), wait for
/healthz, run a session (state kept, a DataFrame's HTML, a PNG plot), check from user code what
the environment's row promises (no route to the server's port, paths outside the view absent,
the server's process, config and token out of reach), compare /healthz's `isolation` with the
row, wait for the image's HEALTHCHECK to say healthy, and remove the container whatever
happened. Before them: the image refuses 0.0.0.0 without tokens, and a default container
refuses a sandbox requirement it cannot meet.

Standard library only (run by the system's python3). Exit status 0 when every step passed.
`--env b` runs one environment; `--keep-going` runs all even after a failure;
`--docker-arg=--runtime=runsc` adds a `docker run` argument to every environment.
"""

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

TOKEN = "image-test-token-0123456789abcdef"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SECCOMP = os.path.join(REPO, "deploy", "docker", "seccomp.json")

# What user namespaces need of the container runtime (docs/deploy.md): the shipped seccomp
# profile (Docker's default plus unshare/clone of namespaces, mount, pivot_root, setns), no
# AppArmor profile where AppArmor exists (its docker-default denies mount), and /proc without
# masked paths, without which the kernel refuses a fresh /proc in a pid namespace.
USERNS_SETTINGS = [
    "--security-opt", f"seccomp={SECCOMP}",
    "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
]

ENVIRONMENTS = {
    "a": {
        "title": "default container (non-root, Docker's default seccomp)",
        "args": [],
        "isolation": {
            "users": "shared", "network": "host", "filesystem": "shared",
            "processes": "shared", "cgroups": "none", "via": "none",
        },
    },
    "d": {
        "title": "root container, default settings (Docker's seccomp, no CAP_SYS_ADMIN)",
        "args": ["--user", "0"],
        "isolation": {
            "users": "per-session", "network": "host", "filesystem": "per-user",
            "processes": "per-user", "cgroups": "none", "via": "none",
        },
    },
    "b": {
        "title": "non-root container, user namespaces allowed (deploy/docker/seccomp.json)",
        # What a hardened Pod has too: no capabilities, no privilege escalation (a user
        # namespace needs neither), a read-only root with a writable /tmp.
        "args": [
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--read-only", "--tmpfs", "/tmp:rw,exec,nosuid,size=1g", *USERNS_SETTINGS,
        ],
        "isolation": {
            "network": "none", "filesystem": "private", "processes": "private",
            "cgroups": "none", "via": "user-namespace",
        },
    },
    "c": {
        "title": "root with CAP_SYS_ADMIN and CAP_NET_ADMIN",
        # NET_ADMIN: a root server's network namespace belongs to the container's user
        # namespace, and bringing its loopback up takes that capability (without it the
        # server reports network "host").
        "args": ["--user", "0", "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", *USERNS_SETTINGS],
        "isolation": {
            "users": "per-session", "network": "none", "filesystem": "private",
            "processes": "per-user", "cgroups": "none", "via": "root",
        },
    },
}


class Failure(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise Failure(f"docker {' '.join(args[:3])} ...: {done.stderr.strip()}")
    return done.stdout.strip()


class Api:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body=None, timeout: float = 60):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def run(self, session: str, code: str) -> dict:
        status, reply = self.call("POST", f"/v1/sessions/{session}/execute", {"code": code})
        if status != 200 or reply.get("status") != "ok":
            raise Failure(f"{code!r} → {status} {json.dumps(reply)[:2000]}")
        return reply


def wait_healthy(api: Api, name: str, deadline_s: float = 180) -> dict:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            status, health = api.call("GET", "/healthz", timeout=2)
            if status == 200:
                return health
        except OSError:
            pass
        if docker("inspect", "-f", "{{.State.Running}}", name, check=False) != "true":
            raise Failure("the container stopped before /healthz answered")
        time.sleep(0.2)
    raise Failure(f"/healthz did not answer within {deadline_s} s")


def wait_docker_healthy(name: str, deadline_s: float = 60) -> None:
    """The image's own HEALTHCHECK (deploy/docker/healthcheck.py) says healthy."""
    end = time.monotonic() + deadline_s
    state = ""
    while time.monotonic() < end:
        state = docker("inspect", "-f", "{{.State.Health.Status}}", name, check=False)
        if state == "healthy":
            return
        time.sleep(0.2)
    log = docker("inspect", "-f", "{{json .State.Health.Log}}", name, check=False)
    raise Failure(f"the image's HEALTHCHECK says {state!r} after {deadline_s} s: {log[-1000:]}")


def report_warm(api: Api, started: float, deadline_s: float = 60) -> None:
    """How long until the first warm worker is ready: a number for docs/deploy.md, not a check
    (a pool that cannot start workers shows in the session's checks)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status, health = api.call("GET", "/healthz", timeout=5)
        pool = health.get("pool", {}) if status == 200 else {}
        if pool.get("ready", 0) > 0:
            print(f"    first warm worker ready {time.monotonic() - started:.1f} s after docker run")
            return
        if pool.get("last_error"):
            print(f"    no warm worker: {pool['last_error']}")
            return
        time.sleep(0.1)
    print(f"    no warm worker ready {deadline_s} s after docker run")


# Run in a session of every environment: what user code can reach. One JSON line.
PROBE = r"""
import json, os, socket
seen = {}
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    seen["server_port"] = "connected"
except OSError as e:
    seen["server_port"] = f"refused: {e}"
seen["exists"] = {p: os.path.exists(p) for p in PATHS}
mine = os.getpid()
others = []
for entry in os.listdir("/proc"):
    if entry.isdigit():
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                others.append(f.read().split(b"\0")[0].decode(errors="replace"))
        except OSError:
            pass
seen["replpool_visible"] = any(c.endswith("replpool") for c in others)
seen["token_in_environ"] = any(TOKEN in v for v in os.environ.values())
try:
    open("/etc/replpool/config.toml").close()
    seen["config_readable"] = True
except OSError as e:
    seen["config_readable"] = f"no: {e.strerror}"
try:
    with open("/proc/1/environ", "rb") as f:
        seen["token_in_pid1_environ"] = TOKEN.encode() in f.read()
except OSError as e:
    seen["token_in_pid1_environ"] = f"unreadable: {e.strerror}"
print(json.dumps(seen))
"""

# Outside the worker's view (docs/architecture.md): the host's secrets and homes, the server's
# config (it may hold tokens) and its own files beside the venv. The venv itself is in view.
ABSENT = ["/etc/shadow", "/home", "/root", "/etc/replpool", "/opt/replpool/requirements.txt"]
PRESENT = ["/opt/replpool/venv/bin/python"]


def check_session(api: Api, port: int, expected: dict) -> dict:
    status, created = api.call("POST", "/v1/sessions", {})
    if status != 201:
        raise Failure(f"create a session → {status} {created}")
    session = created["session_id"]
    api.run(session, "x = 41")
    value = api.run(session, "x + 1")["result"]["text/plain"]
    if value != "42":
        raise Failure(f"x + 1 gave {value!r}: state not kept")
    frame = api.run(session, "pd.DataFrame({'a': [1, 2]})")["result"]
    if "<table" not in frame.get("text/html", ""):
        raise Failure(f"a DataFrame has no HTML table: {frame}")
    display = api.run(session, "plt.plot([1, 2, 3])\nplt.show()")["display"]
    pngs = [d["image/png"] for d in display if "image/png" in d]
    if not pngs or not base64.b64decode(pngs[0]).startswith(b"\x89PNG"):
        raise Failure(f"a plot gave no PNG: {json.dumps(display)[:500]}")

    code = (
        PROBE.replace("PORT", str(port))
        .replace("PATHS", repr(ABSENT + PRESENT))
        .replace("TOKEN", repr(TOKEN))
    )
    seen = json.loads(api.run(session, code)["stdout"])
    print(f"    user code sees: {json.dumps(seen)}")
    # What the row promises, seen from user code. Tokens given as REPLPOOL_AUTH_TOKENS are the
    # server's in every environment.
    problems = ["the server's token is in user code's environment"] if seen["token_in_environ"] else []
    if expected.get("network") == "none" and seen["server_port"] == "connected":
        problems.append("user code connected to the server's port (network not none)")
    if expected.get("filesystem") == "private":
        problems += [f"{p} exists for user code" for p in ABSENT if seen["exists"][p]]
        problems += [f"{p} missing for user code" for p in PRESENT if not seen["exists"][p]]
    if expected.get("processes") == "private" and seen["replpool_visible"]:
        problems.append("user code sees the server's process in /proc")
    # Where sessions have uids of their own, the server's config (tokens may be in it) is
    # closed to them even in the machine's view.
    if expected.get("users") == "per-session" and seen["config_readable"] is True:
        problems.append("user code reads /etc/replpool/config.toml")
    if expected.get("users") == "per-session" and seen["token_in_pid1_environ"] is True:
        problems.append("user code reads the server's token in /proc/1/environ")
    if expected.get("via") != "none" and seen["token_in_pid1_environ"] is True:
        problems.append("user code reads the server's token in /proc/1/environ")
    if problems:
        raise Failure("; ".join(problems))
    status, _ = api.call("DELETE", f"/v1/sessions/{session}")
    if status != 204:
        raise Failure(f"delete the session → {status}")
    return seen


def check_isolation(health: dict, expected: dict) -> None:
    isolation = health.get("isolation")
    print(f"    /healthz isolation: {json.dumps(isolation)}")
    if not isinstance(isolation, dict):
        raise Failure(f"/healthz has no isolation object: {json.dumps(health)}")
    wrong = {k: (isolation.get(k), v) for k, v in expected.items() if isolation.get(k) != v}
    if wrong:
        raise Failure(
            "isolation differs from docs/deploy.md's row: "
            + ", ".join(f"{k} is {got!r}, expected {want!r}" for k, (got, want) in wrong.items())
        )


def run_environment(image: str, key: str, extra: list[str]) -> None:
    env = ENVIRONMENTS[key]
    port = free_port()
    name = f"replpool-test-{key}-{os.getpid()}"
    print(f"==> environment {key}: {env['title']} (port {port})")
    started = time.monotonic()
    try:
        docker(
            "run", "--detach", "--name", name, "--network", "host",
            "-e", f"REPLPOOL_SERVER_BIND=127.0.0.1:{port}",
            "-e", f'REPLPOOL_AUTH_TOKENS=["{TOKEN}"]',
            # The image's HEALTHCHECK, run every second instead of every 30.
            "--health-interval", "1s",
            *env["args"], *extra, image,
        )
        api = Api(port)
        health = wait_healthy(api, name)
        print(f"    /healthz ok {time.monotonic() - started:.1f} s after docker run")
        report_warm(api, started)
        check_session(api, port, env["isolation"])
        wait_docker_healthy(name)
        # The isolation last: everything else is reported even before the core reports it.
        check_isolation(health, env["isolation"])
        print(f"    environment {key}: ok")
    except Failure as e:
        logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True, text=True)
        print(f"    environment {key} FAILED: {e}")
        print("    the container's log (last 30 lines):")
        for line in (logs.stdout + logs.stderr).splitlines():
            print(f"      {line}")
        raise
    finally:
        docker("rm", "--force", name, check=False)


def check_refuses_public_without_tokens(image: str) -> None:
    """The image binds 0.0.0.0: without tokens it must refuse, before listening anywhere."""
    print("==> the image refuses to serve on 0.0.0.0 without auth.tokens")
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image], capture_output=True, text=True,
        timeout=120,
    )
    if done.returncode == 0 or "auth.tokens" not in done.stderr:
        raise Failure(f"expected a refusal naming auth.tokens; exit {done.returncode}: {done.stderr}")
    print(f"    refused: {done.stderr.strip().splitlines()[-1]}")


def check_refuses_unmet_requirement(image: str) -> None:
    """A default container cannot make a network namespace: requiring one refuses to start, in
    one line naming the setting that grants it, instead of running weaker."""
    print("==> a default container refuses sandbox.require = [\"network\"]")
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none",
         "-e", "REPLPOOL_SERVER_BIND=127.0.0.1:8765", "-e", 'REPLPOOL_SANDBOX_REQUIRE=["network"]',
         image],
        capture_output=True, text=True, timeout=120,
    )
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    if done.returncode != 1 or "sandbox.require" not in last or "seccomp" not in last:
        raise Failure(f"expected exit 1 and a line naming sandbox.require and seccomp; exit {done.returncode}: {done.stderr}")
    print(f"    refused: {last[:160]}...")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", default="replpool:dev")
    parser.add_argument("--env", action="append", choices=sorted(ENVIRONMENTS))
    parser.add_argument("--keep-going", action="store_true")
    parser.add_argument(
        "--docker-arg", action="append", default=[], metavar="ARG",
        help="one more `docker run` argument for every environment (e.g. --runtime=runsc)",
    )
    args = parser.parse_args()
    failed = []
    steps = [
        ("refusal", lambda: check_refuses_public_without_tokens(args.image)),
        ("require", lambda: check_refuses_unmet_requirement(args.image)),
    ]
    steps += [(k, lambda k=k: run_environment(args.image, k, args.docker_arg)) for k in args.env or sorted(ENVIRONMENTS)]
    for key, step in steps:
        try:
            step()
        except Failure:
            failed.append(key)
            if not args.keep_going:
                break
    if failed:
        print(f"==> test-image FAILED: {', '.join(failed)}")
        return 1
    print("==> test-image passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
