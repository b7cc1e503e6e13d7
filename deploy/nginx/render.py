#!/usr/bin/env python3
r"""Renders deploy/nginx/replpool.conf.template into an nginx.conf (standard library only).

Two ways to name the nodes:

  Static addresses (loopback tests, a fixed set of machines):
    render.py --node node-a=127.0.0.1:8001 --node node-b=127.0.0.1:8002 --listen 127.0.0.1:8080

  Kubernetes (a StatefulSet behind a headless Service): each node is its pod's DNS name,
  `<pod>.<headless service's domain>`, resolved by nginx's `resolver` when a request names
  it, so adding a pod needs no new config; requests that name no node go to the (ClusterIP)
  Service, which holds only ready pods (`/readyz`):
    render.py --node-domain replpool-nodes.default.svc.cluster.local --node-port 8765 \
              --any replpool.default.svc.cluster.local:8765 \
              --resolver kube-dns.kube-system.svc.cluster.local --listen 8080
  or, with the names and ports of deploy/k8s (what deploy/k8s/nginx.conf is rendered with):
    render.py --kubernetes replpool --config deploy/docker/config.toml -o deploy/k8s/nginx.conf

Limits come from replpool's own config.toml (`--config`), so that the proxy's timeouts and
body limit are above the nodes'.
"""

import argparse
import math
import pathlib
import re
import sys
import tomllib

TEMPLATE = pathlib.Path(__file__).with_name("replpool.conf.template")
LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Defaults of the replpool fields the proxy's limits follow (config.toml).
DEFAULTS = {
    ("execution", "max_timeout_ms"): 600_000,
    ("execution", "max_frame_bytes"): 64 << 20,
    ("files", "max_bytes"): 100 << 20,
    ("judge", "run_timeout_ms"): 120_000,
    ("judge", "compile_timeout_ms"): 60_000,
}
# Beyond the nodes' own deadlines: time for the reply to travel.
MARGIN_SECONDS = 60


class RenderError(Exception):
    pass


def replpool_limits(config_path):
    values = dict(DEFAULTS)
    if config_path:
        try:
            with open(config_path, "rb") as f:
                config = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise RenderError(f"cannot read {config_path}: {e}") from e
        for (section, key) in DEFAULTS:
            value = config.get(section, {}).get(key)
            if value is not None:
                if not isinstance(value, int) or value < 0:
                    raise RenderError(f"{section}.{key} in {config_path} is not a count: {value!r}")
                values[(section, key)] = value
    return values


def parse_node(text):
    name, sep, address = text.partition("=")
    if not sep or not LABEL.fullmatch(name) or not re.fullmatch(r"[^\s;{}'\"]+:\d+", address):
        raise RenderError(f"--node wants NAME=HOST:PORT with NAME a DNS label, not {text!r}")
    return name, address


def apply_kubernetes_preset(args):
    """--kubernetes NAMESPACE: the Services, port and paths of deploy/k8s in that namespace,
    for nginx running as the official image's non-root user on a read-only root."""
    namespace = args.kubernetes
    if not LABEL.fullmatch(namespace):
        raise RenderError(f"--kubernetes wants a namespace name (a DNS label), not {namespace!r}")
    if args.node or args.node_domain or args.any or args.resolver:
        raise RenderError("--kubernetes is not used with --node/--node-domain/--any/--resolver")
    args.node_domain = f"replpool-nodes.{namespace}.svc.cluster.local"
    args.any = f"replpool.{namespace}.svc.cluster.local:{args.node_port}"
    args.resolver = "kube-dns.kube-system.svc.cluster.local"
    args.prefix = "/tmp"
    # An emptyDir at /tmp: nginx makes each temp path's last directory, not its parents.
    args.temp_dir = args.temp_dir or "/tmp"
    args.error_log = args.error_log or "/dev/stderr"
    args.access_log = args.access_log or "/dev/stdout"


def render(args):
    if args.kubernetes:
        apply_kubernetes_preset(args)
    limits = replpool_limits(args.config)
    longest_ms = max(
        limits[("execution", "max_timeout_ms")],
        limits[("judge", "run_timeout_ms")] + limits[("judge", "compile_timeout_ms")],
    )
    read_timeout = f"{math.ceil(longest_ms / 1000) + MARGIN_SECONDS}s"
    # One byte over the nodes' largest body, so a node (not nginx) answers 413 in its words.
    max_body = max(limits[("files", "max_bytes")], limits[("execution", "max_frame_bytes")]) + 1

    peer = f"max_fails={args.max_fails} fail_timeout={args.fail_timeout}"
    # Below the nodes' server.keep_alive_timeout_ms (10 s by default), so nginx never sends
    # on a kept-alive connection the node is closing.
    keepalive = "    keepalive 32;\n    keepalive_timeout 4s;\n"
    if args.node:
        nodes = [parse_node(n) for n in args.node]
        names = [n for n, _ in nodes]
        if len(set(names)) != len(names):
            raise RenderError("a node is named twice")
        if args.node_domain or args.any or args.resolver:
            raise RenderError("--node is not used with --node-domain/--any/--resolver")
        targets = [f"        {name} replpool_node_{name.replace('-', '_')};" for name in names]
        # An id of a node nobody knows: an upstream with no live server, so nginx answers
        # 503 node_unavailable naming it.
        targets.append("        default replpool_unknown_node;")
        upstreams = [
            "upstream replpool_any {\n    least_conn;\n"
            + "".join(f"    server {address} {peer};\n" for _, address in nodes)
            + keepalive
            + "}"
        ]
        upstreams += [
            f"upstream replpool_node_{name.replace('-', '_')} {{\n    server {address};\n{keepalive}}}"
            for name, address in nodes
        ]
        upstreams.append("upstream replpool_unknown_node {\n    server 127.0.0.1:9 down;\n}")
        resolver = "# No resolver: every node's address is written above."
        node_count = len(nodes)
    elif args.node_domain and args.any and args.resolver:
        if not re.fullmatch(r"[a-z0-9.-]+", args.node_domain):
            raise RenderError(f"--node-domain is not a domain name: {args.node_domain!r}")
        # The label the map let through, under the headless Service's domain: a request can
        # only reach this Service's pods.
        targets = [f'        default "$replpool_node.{args.node_domain}:{args.node_port}";']
        upstreams = [
            "upstream replpool_any {\n"
            f"    server {args.any} {peer};\n" + keepalive + "}"
        ]
        # Short validity: a pod that moved gets its new address within seconds.
        resolver = f"resolver {args.resolver} valid=5s ipv6=off;\n    resolver_timeout 2s;"
        node_count = 2
    else:
        raise RenderError("name the nodes: --node NAME=HOST:PORT..., or --node-domain, --any and --resolver")

    prefix = pathlib.Path(args.prefix)
    fill = {
        "WORKER_PROCESSES": str(args.worker_processes),
        "PID_FILE": str(prefix / "nginx.pid"),
        "ERROR_LOG": args.error_log or str(prefix / "error.log"),
        "ACCESS_LOG": args.access_log or str(prefix / "access.log"),
        "TEMP_DIR": args.temp_dir or str(prefix / "temp"),
        "RESOLVER": resolver,
        "NODE_TARGETS": "\n".join(targets),
        "UPSTREAMS": "\n\n".join("    " + u.replace("\n", "\n    ") for u in upstreams),
        "CONNECT_TIMEOUT": args.connect_timeout,
        "READ_TIMEOUT": read_timeout,
        "MAX_BODY": str(max_body),
        "LISTEN": args.listen,
        "NODE_COUNT": str(node_count),
    }
    text = TEMPLATE.read_text()
    for key, value in fill.items():
        text = text.replace(f"@@{key}@@", value)
    left = sorted(set(re.findall(r"@@([A-Z_]+)@@", text)))
    if left:
        raise RenderError(f"the template has placeholders the renderer does not fill: {left}")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", action="append", help="NAME=HOST:PORT of a node (repeat)")
    parser.add_argument("--node-domain", help="Kubernetes: the headless Service's domain")
    parser.add_argument("--kubernetes", metavar="NAMESPACE",
                        help="deploy/k8s's names in NAMESPACE (sets --node-domain, --any, --resolver, --prefix, logs)")
    parser.add_argument("--node-port", type=int, default=8765, help="Kubernetes: the nodes' port (8765)")
    parser.add_argument("--any", help="Kubernetes: HOST:PORT of the Service of ready nodes")
    parser.add_argument("--resolver", help="Kubernetes: the cluster's DNS server")
    parser.add_argument("--listen", default="8080", help="nginx's listen address (default 8080)")
    parser.add_argument("--config", help="replpool's config.toml, for its limits")
    parser.add_argument("--prefix", default="/var/lib/nginx", help="directory of pid file, logs, temp files")
    parser.add_argument("--temp-dir", help="parent of nginx's temp directories (default PREFIX/temp)")
    parser.add_argument("--error-log", help="default PREFIX/error.log (stderr: /dev/stderr)")
    parser.add_argument("--access-log", help="default PREFIX/access.log (off: off)")
    parser.add_argument("--worker-processes", default="auto")
    parser.add_argument("--max-fails", type=int, default=1, help="failures that take a node out of 'any' ...")
    parser.add_argument("--fail-timeout", default="10s", help="... for this long")
    parser.add_argument("--connect-timeout", default="5s")
    parser.add_argument("-o", "--output", help="file to write (default stdout)")
    args = parser.parse_args(argv)
    try:
        text = render(args)
    except RenderError as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 2
    if args.output:
        pathlib.Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
