# replpool's container image. `make image` builds it here (the base from Debian's packages, see
# deploy/docker/base-image.sh); elsewhere `docker build .` works on debian:bookworm-slim.
# How to run it, and what isolation each set of security settings gives: docs/deploy.md.
ARG BASE=debian:bookworm-slim
# PEM certificates the build's downloads (crates.io, PyPI) must trust beyond Debian's, for a
# network behind a TLS-inspecting proxy; `make image` passes the machine's own
# (/usr/local/share/ca-certificates). Used while building only: the runtime image trusts
# Debian's CAs alone. (They are public certificates, but `docker history` shows them.)
ARG EXTRA_CA_CERTS=

# ---- builder: the release server binary -----------------------------------------------------
FROM ${BASE} AS builder
ARG EXTRA_CA_CERTS
# bookworm's rustc (1.63) predates edition 2024; rustc-web/cargo-web (bookworm-security, 1.96)
# install as /usr/bin/rustc and /usr/bin/cargo.
RUN apt-get update \
    && apt-get install -y --no-install-recommends rustc-web cargo-web gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt \
        && update-ca-certificates; fi
WORKDIR /src
ENV CARGO_HOME=/usr/local/cargo CARGO_TERM_PROGRESS_WHEN=never
# The dependencies first, against stub sources, so that a change of replpool's own code reuses
# this layer (downloaded and compiled crates). Every workspace member's manifest is needed to
# resolve the workspace; only the server (-p replpool) is built: the python/ extension needs
# Python's headers and is not part of the image.
COPY Cargo.toml Cargo.lock build.rs ./
COPY core/Cargo.toml core/Cargo.toml
COPY python/Cargo.toml python/Cargo.toml
RUN mkdir -p src core/src python/src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs core/src/lib.rs python/src/lib.rs \
    && echo 'fn main() {}' > benches/replpool.rs \
    && cargo build --release --locked -p replpool \
    && rm -rf src core/src python/src benches
COPY bootstrap bootstrap
COPY core core
COPY src src
# The web console's files, compiled into the binary (src/api/console.rs).
COPY console console
COPY benches benches
COPY python/src python/src
# COPY keeps the files' times, which can be older than the stubs': touch the roots so cargo
# rebuilds replpool and replpool-core from the real sources.
RUN touch src/main.rs src/lib.rs core/src/lib.rs \
    && cargo build --release --locked -p replpool --bin replpool \
    && cp target/release/replpool /usr/local/bin/replpool

# ---- runtime ---------------------------------------------------------------------------------
FROM ${BASE}
ARG EXTRA_CA_CERTS
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# The workers' interpreter: a venv with the pinned packages. Owned by root, so user code (and
# the server) can import from it but not change it.
COPY bootstrap/requirements.txt /opt/replpool/requirements.txt
RUN python3 -m venv /opt/replpool/venv \
    && cat /etc/ssl/certs/ca-certificates.crt > /tmp/build-ca.pem \
    && printf '%s\n' "$EXTRA_CA_CERTS" >> /tmp/build-ca.pem \
    && /opt/replpool/venv/bin/pip install --no-cache-dir --disable-pip-version-check --quiet \
        --cert /tmp/build-ca.pem -r /opt/replpool/requirements.txt \
    && rm /tmp/build-ca.pem \
    && mkdir -p /opt/replpool/scripts
# matplotlib's font list, built once into the venv (root's, read-only to the server and its
# workers) instead of by every template and worker at its start: worker.py builds it.
COPY bootstrap/worker.py /tmp/worker.py
RUN /opt/replpool/venv/bin/python /tmp/worker.py '{"font_cache": "build"}' && rm /tmp/worker.py
# worker.py is compiled into the binary and written to the server's state directory in $TMPDIR
# at start: the image needs no bootstrap/ of its own.
COPY --from=builder /usr/local/bin/replpool /usr/local/bin/replpool
COPY deploy/docker/config.toml /etc/replpool/config.toml
COPY deploy/docker/healthcheck.py /usr/local/lib/replpool/healthcheck.py
# The config may hold tokens: readable by the server (root, or the replpool group), not by
# sessions' own uids (a root server's workers), which see the machine's files in some settings.
RUN groupadd --system --gid 10001 replpool \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin replpool \
    && chown root:replpool /etc/replpool /etc/replpool/config.toml \
    && chmod 0750 /etc/replpool && chmod 0640 /etc/replpool/config.toml
ENV REPLPOOL_CONFIG=/etc/replpool/config.toml
USER 10001:10001
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python3", "/usr/local/lib/replpool/healthcheck.py"]
# No shell in between: the server is pid 1's direct command and gets SIGTERM itself (it drains
# executions for server.shutdown_grace_ms, then exits 0).
ENTRYPOINT ["replpool"]
CMD ["serve"]
