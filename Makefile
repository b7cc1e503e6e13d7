# replpool: `make serve` runs the service, `make test` runs every test. Both set up .venv first.

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
# Touched after a successful install, so a changed requirements file reinstalls.
VENV_STAMP := $(VENV)/.installed
CONFIG ?= config.toml
BENCH_STAMP := $(VENV)/.bench-installed
TEST_STAMP := $(VENV)/.tests-installed
PACKAGE_STAMP := $(VENV)/.package-tools-installed

.PHONY: serve test bench venv build package clean image test-image test-cluster k8s-nginx soak test-e2e e2e-if-chromium

# matplotlib's font list, built once into the venv (worker.py's `font_cache_dir`) rather than
# by every template and worker at its start. Delete the directory to rebuild it (new fonts).
FONT_CACHE_STAMP := $(VENV)/share/replpool/matplotlib/.built

venv: $(VENV_STAMP) $(FONT_CACHE_STAMP)

$(VENV_STAMP): bootstrap/requirements.txt bootstrap/tools-requirements.txt
	@echo "==> creating $(VENV) from bootstrap/requirements.txt and bootstrap/tools-requirements.txt"
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --disable-pip-version-check --quiet -r bootstrap/requirements.txt -r bootstrap/tools-requirements.txt
	touch $(VENV_STAMP)

$(FONT_CACHE_STAMP): $(VENV_STAMP)
	@echo "==> building matplotlib's font list into $(VENV)"
	$(VENV_PY) bootstrap/worker.py '{"font_cache": "build"}'
	touch $(FONT_CACHE_STAMP)

# The benchmark's Jupyter peer, on top of the workers' packages.
$(BENCH_STAMP): benches/requirements.txt $(VENV_STAMP)
	@echo "==> installing the benchmark's peers from benches/requirements.txt"
	$(VENV_PY) -m pip install --disable-pip-version-check --quiet -r benches/requirements.txt
	touch $(BENCH_STAMP)

# What the integration tests need beyond the workers' packages (nbformat, openapi-spec-validator,
# schemathesis).
$(TEST_STAMP): tests/requirements.txt $(VENV_STAMP)
	@echo "==> installing the tests' packages from tests/requirements.txt"
	$(VENV_PY) -m pip install --disable-pip-version-check --quiet -r tests/requirements.txt
	touch $(TEST_STAMP)

# maturin and pytest, for the Python package.
$(PACKAGE_STAMP): python/requirements.txt $(VENV_STAMP)
	@echo "==> installing the Python package's build and test tools from python/requirements.txt"
	$(VENV_PY) -m pip install --disable-pip-version-check --quiet -r python/requirements.txt
	touch $(PACKAGE_STAMP)

# The server only: the Python extension (python/) is maturin's to build (`make package`), with
# the venv's interpreter in pyo3's configuration; built here too, without it, pyo3 and the
# extension were compiled again each time one followed the other.
build:
	cargo build --release --locked -p replpool

# The `replpool` Python package (python/), built and installed into .venv (editable).
package: $(PACKAGE_STAMP)
	@echo "==> building the Python package into $(VENV)"
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(VENV)/bin/maturin develop --release --locked --quiet -m python/Cargo.toml

serve: venv build
	./target/release/replpool serve --config $(CONFIG)

test: venv $(TEST_STAMP) $(BENCH_STAMP) build package
	cargo build --locked --all-targets
	cargo test --locked
	@echo "==> schemathesis against a live server, from its /openapi.json (bounded: a few minutes)"
	$(VENV_PY) tests/fuzz/run.py --binary target/release/replpool
	$(VENV_PY) -m unittest discover -s bootstrap -p 'test_*.py'
	@echo "==> deploy/k8s, validated offline: yamllint and the Kubernetes schemas"
	$(VENV_PY) -m unittest discover -s tests/k8s -p 'test_*.py'
	$(VENV_PY) -m pytest -q python/tests
	$(MAKE) e2e-if-chromium
	@echo "==> the benchmark, quick, so that it cannot rot (no speed is asserted)"
	@# The dev profile: the harness `cargo build --all-targets` made above, against the release
	@# server. Built as `cargo bench` builds it (release, dev-dependencies' features unified)
	@# the server's library compiled once more, a release build of minutes for a run whose
	@# numbers nobody reads; `make bench` measures with the release harness.
	cargo bench --locked --profile dev --bench replpool -- --quick --out target/bench-quick.md --json target/bench-quick.json

# The web console in a real browser (issue 23): Debian's chromium driven by Playwright for
# Python, from a venv of its own (target/e2e-venv: playwright and nbformat, tests/e2e/
# requirements.txt), against a server of its own. Needs /usr/bin/chromium (as root:
# `apt-get update && apt-get install -y chromium`); Playwright's own browser download is not
# used. Screenshots of each step go to target/e2e/.
E2E_VENV := target/e2e-venv
E2E_STAMP := $(E2E_VENV)/.installed
CHROMIUM := /usr/bin/chromium

$(E2E_STAMP): tests/e2e/requirements.txt
	@echo "==> creating $(E2E_VENV) from tests/e2e/requirements.txt"
	test -x $(E2E_VENV)/bin/python || $(PYTHON) -m venv $(E2E_VENV)
	$(E2E_VENV)/bin/python -m pip install --disable-pip-version-check --quiet -r tests/e2e/requirements.txt
	touch $(E2E_STAMP)

test-e2e: venv build $(E2E_STAMP)
	@test -x $(CHROMIUM) || { echo "no $(CHROMIUM): run (as root) apt-get update && apt-get install -y chromium"; exit 1; }
	$(E2E_VENV)/bin/python tests/e2e/console.py --binary target/release/replpool --python $(CURDIR)/$(VENV_PY)

# In `make test`: the browser test when chromium is there, a line saying so when it is not.
e2e-if-chromium:
	@if test -x $(CHROMIUM); then $(MAKE) test-e2e; else echo "skipped: no $(CHROMIUM) (apt-get install chromium)"; fi

# Two nodes behind nginx on loopback (issue 18: routing by id, node death, draining). Not in
# `make test`: it installs nginx (apt, as root) when missing and takes about a minute. The
# package: the run checks what the Python Client raises for a session of a dead node.
test-cluster: venv build package
	$(VENV_PY) tests/cluster/run.py

# 64 clients for SOAK_SECS seconds (10 minutes by default) of a mixed workload against the
# release server on loopback; writes docs/soak.md and docs/soak.png (tests/soak/run.py). Not in
# `make test`: it takes the machine for that long. `SOAK_SECS=60 make soak` is a quick check.
SOAK_SECS ?= 600
soak: venv build
	SOAK_SECS=$(SOAK_SECS) $(VENV_PY) tests/soak/run.py

# deploy/k8s/nginx.conf: deploy/nginx rendered for deploy/k8s (its namespace, Services, the
# image's config.toml). Run after changing any of them; `make test` fails while they differ.
K8S_NAMESPACE ?= replpool
k8s-nginx:
	$(PYTHON) deploy/nginx/render.py --kubernetes $(K8S_NAMESPACE) --config deploy/docker/config.toml -o deploy/k8s/nginx.conf

# `make bench` writes docs/benchmarks.md and target/bench.json; `make bench QUICK=1` is a
# reduced run (a minute or two) that writes the same files.
bench: venv $(BENCH_STAMP) build package
	cargo bench --locked --bench replpool -- $(if $(QUICK),--quick)

# The container image (Dockerfile), on a base image made from Debian's packages (no image
# registry needed): deploy/docker/base-image.sh, cached in the engine once built.
IMAGE ?= replpool:dev
BASE_IMAGE ?= replpool-base:bookworm

image:
	deploy/docker/with-engine.sh deploy/docker/build-image.sh $(IMAGE) $(BASE_IMAGE)

# Not part of `make test`: needs a container engine (started here if none answers, which
# needs root) and a few minutes. Runs the image under each environment of docs/deploy.md's table.
test-image:
	deploy/docker/with-engine.sh tests/image/test-image.sh $(IMAGE) $(BASE_IMAGE)

clean:
	cargo clean
	rm -rf $(VENV)
