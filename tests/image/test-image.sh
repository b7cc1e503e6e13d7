#!/usr/bin/env bash
# `make test-image` (inside deploy/docker/with-engine.sh, which provides an engine): build the
# image, then run it under every environment of docs/deploy.md's table (tests/image/run.py).
set -euo pipefail
image=${1:-replpool:dev}
base=${2:-replpool-base:bookworm}
deploy/docker/build-image.sh "$image" "$base"
python3 tests/image/run.py --image "$image" --keep-going
