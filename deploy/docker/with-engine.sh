#!/usr/bin/env bash
# Runs a command with a Docker engine that answers: the one already running, else a dockerd
# started here (Debian's docker.io, installed when missing; needs root) and stopped again when
# the command ends, however it ends. The started engine makes no bridge and no iptables rules
# (the machine's network is left as it was): builds and containers use --network host.
# Its log: target/dockerd.log.
set -euo pipefail

if docker info >/dev/null 2>&1; then
    exec "$@"
fi

if ! command -v dockerd >/dev/null; then
    echo "==> installing docker.io (the Docker engine)"
    apt-get install -y docker.io
fi
if [ "$(id -u)" != 0 ]; then
    echo "no Docker engine answers, and starting one needs root" >&2
    exit 1
fi

mkdir -p target
log=$PWD/target/dockerd.log
echo "==> starting dockerd (log: $log)"
dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
dockerd_pid=$!
stop_engine() {
    echo "==> stopping the dockerd started here (pid $dockerd_pid)"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
}
trap stop_engine EXIT

for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
        echo "dockerd exited; the end of its log:" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
    sleep 0.5
done
docker info >/dev/null 2>&1 || { echo "dockerd did not answer within 60 s (see $log)" >&2; exit 1; }

"$@"
