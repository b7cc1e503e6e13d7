# replpool: `make serve` runs the service, `make test` runs every test. Both set up .venv first.

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
# Touched after a successful install, so a changed requirements file reinstalls.
VENV_STAMP := $(VENV)/.installed
CONFIG ?= config.toml

.PHONY: serve test bench venv build clean

venv: $(VENV_STAMP)

$(VENV_STAMP): bootstrap/requirements.txt
	@echo "==> creating $(VENV) from bootstrap/requirements.txt"
	test -x $(VENV_PY) || $(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --disable-pip-version-check --quiet -r bootstrap/requirements.txt
	touch $(VENV_STAMP)

build:
	cargo build --release --locked

serve: venv build
	./target/release/replpool serve --config $(CONFIG)

test: venv
	cargo build --locked --all-targets
	cargo test --locked
	$(VENV_PY) -m unittest discover -s bootstrap -p 'test_*.py'

bench: venv build
	@echo "the benchmark arrives with its own issue; nothing to measure yet"

clean:
	cargo clean
	rm -rf $(VENV)
