# The two set-up commands of the README: `make demo` (main job) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install node browser demo test test-fast lint clean

$(BIN)/activate: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(BIN)/activate

install: $(BIN)/activate

# onnxruntime-node's post-install step would download GPU extras: skip it, the CPU
# binaries ship inside the package.
node: deploy/node/package-lock.json
	cd deploy/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error

# Debian's Chromium renders the search report in a test (headless). Installed only where
# it is missing and apt-get is there; elsewhere that test says it was skipped and why.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

demo: install
	PY=$(BIN)/python bash scripts/demo.sh

test: install node browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The fast lane (under a minute): everything but the tests marked slow (real training,
# extra exports, subprocess races); `make test` (CI) still runs them all.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs artifacts deploy/node/node_modules
