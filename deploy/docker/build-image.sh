#!/usr/bin/env bash
# `make image`: the base image from Debian's packages (once), then the Dockerfile on it.
set -euo pipefail
image=${1:-replpool:dev}
base=${2:-replpool-base:bookworm}

"$(dirname "$0")/base-image.sh" "$base"
echo "==> building $image on $base (a first build compiles the server: several minutes)"
start=$(date +%s)
# The machine's own CAs (a TLS-inspecting proxy's, say) for the build's downloads; see the
# Dockerfile's EXTRA_CA_CERTS.
extra_ca=$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true)
docker build --network host --build-arg BASE="$base" --build-arg EXTRA_CA_CERTS="$extra_ca" \
    -t "$image" .
echo "==> $image built in $(($(date +%s) - start)) s, $(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
