#!/usr/bin/env bash
# Builds the base image the Dockerfile builds on (`--build-arg BASE=...`) from Debian's own
# packages, for machines that reach Debian's mirror but no image registry: a minbase bookworm
# made by mmdebstrap, imported into the local Docker engine. Skipped when the image exists.
# Needs root (mmdebstrap's root mode; apt-get when a tool is missing).
set -euo pipefail

image=${1:-replpool-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "==> base image $image exists (docker rmi $image to rebuild it)"
    exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
    echo "==> installing mmdebstrap"
    apt-get install -y --no-install-recommends mmdebstrap
fi

echo "==> building base image $image with mmdebstrap from $mirror (a few minutes)"
start=$(date +%s)
# bookworm-security is not optional: the builder's Rust (rustc-web 1.96, which knows edition
# 2024) comes from there. The dpkg filters are the slim images' own: no manuals, no
# translations, no docs but copyrights; they stay in the image, so the Dockerfile's installs
# are slim too.
mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm - \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main" |
    docker import --change 'CMD ["bash"]' - "$image" >/dev/null
echo "==> base image $image built in $(($(date +%s) - start)) s"
