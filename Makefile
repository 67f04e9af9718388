# Two commands on a fresh machine: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv and install everything first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_HOME ?= $(CURDIR)/demo_home
DEMO_NIGHT ?= 2026-11-20
REDUCTION_HOME ?= $(CURDIR)/reduction_home
HOST ?= 127.0.0.1
PORT ?= 3000
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

CONSTRAINTS := deploy/constraints.txt

.PHONY: setup lock browser demo demo-daemon test dev validate bench bench-backfill bench-night clean

# Every install takes the exact versions of $(CONSTRAINTS) (the lock; deploy/Dockerfile uses it too),
# and runs again when setup.py or the lock changes.
$(STAMP): setup.py $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Regenerate the lock after a change of requirements in setup.py (or after `.venv/bin/pip install -U
# <name>`): install the project with its dev and bench extras without the lock (pip keeps every
# installed version that still satisfies setup.py), then pin everything .venv holds, the project aside.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	{ printf '%s\n' \
	  "# The lock: the exact version of every distribution that \`pip install -e '.[dev,bench]'\` installs" \
	  '# (Python 3.11, Linux). `make setup`, `make bench` and deploy/Dockerfile install with' \
	  '# `-c deploy/constraints.txt`. Do not edit by hand: regenerate it with `make lock`, which installs' \
	  "# the project's dev and bench extras into .venv without this file, then writes" \
	  '# `.venv/bin/pip freeze --exclude-editable` (the project itself left out) here.'; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^reduction[-_]assets([ =@]|$$)'; \
	} > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

# A home's Dagster instance settings are the repository's dagster.yaml: Home.ensure() creates the
# folders (and copies the package's default, a symlink to that same file), then the file itself is
# installed over it, so the home gets this checkout's settings even when the installed package is
# another checkout's, and an older home of `make dev` gets them again.
define instance_settings
	$(BIN)/python -c "from reduction_assets.support.home import resolve_home; resolve_home('$(1)').ensure()"
	install -m 644 dagster.yaml $(1)/dagster/dagster.yaml
endef

# A fresh REDUCTION_HOME, one simulated night per simulated instrument, `process`, the progress table,
# the night's report (demo_home/report.html).
demo: setup
	rm -rf $(DEMO_HOME)
	$(call instance_settings,$(DEMO_HOME))
	mkdir -p $(DEMO_HOME)/landing $(DEMO_HOME)/reference
	for instrument in lcosim noirsim; do \
	  $(BIN)/reduction-assets simulate --instrument $$instrument --night $(DEMO_NIGHT) \
	    --out $(DEMO_HOME)/simulated/$$instrument || exit 1; \
	  cp $(DEMO_HOME)/simulated/$$instrument/*.fits $(DEMO_HOME)/landing/ || exit 1; \
	  cp $(DEMO_HOME)/simulated/$$instrument/reference.csv $(DEMO_HOME)/reference/$$instrument.csv || exit 1; \
	done
	$(BIN)/reduction-assets --home $(DEMO_HOME) process --settle-seconds 1
	$(BIN)/reduction-assets --home $(DEMO_HOME) progress $(DEMO_NIGHT)
	$(BIN)/reduction-assets --home $(DEMO_HOME) quarantine
	$(BIN)/reduction-assets --home $(DEMO_HOME) report $(DEMO_NIGHT) --out $(DEMO_HOME)/report.html

# Hands off: a simulated night per instrument dropped into landing/ with only `dagster-daemon` running
# becomes masters, reduced frames, stacks and archive records (~2 min).
demo-daemon: setup
	rm -rf $(DEMO_HOME)-daemon
	$(BIN)/python -m reduction_assets.orchestration.daemon_demo --home $(DEMO_HOME)-daemon

# Debian's chromium and chromium-driver for the UI tests, installed where missing and possible (as
# root or with sudo); elsewhere those tests skip with the reason (and fail when CI=true).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium and chromium-driver are missing and cannot be installed here: the UI tests will skip"; fi; \
	fi

# Lint and formatting first (ruff.toml); the numba kernels compiled once into NUMBA_CACHE_DIR (on a
# cold cache, every process the tests start would otherwise compile them again, ~1 min each); then
# the whole suite in TEST_WORKERS processes, more than the cores: most slow tests wait on daemons and
# subprocesses. A test file stays in one process (its tests share module fixtures, and
# test_production's Celery workers share one queue); the files marked slow are handed out first.
TEST_WORKERS ?= 3
test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m reduction_assets.warm
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder reduction_assets_tests

# Timing and memory tables (a few minutes; ccdproc alone takes ~25 s and 6.5 GB at 50 frames; the
# co-add benchmark writes 10 frames of 2048² to a temporary folder).
bench: setup
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.stacking
	$(BIN)/python -m benchmarks.reduce_frame
	$(BIN)/python -m benchmarks.coadd

# A daemon backfill of 30 nights through a real webserver and daemon (~5 min; BEFORE=<checkout> adds
# the same measurement of an older release, ~1 h).
bench-backfill: setup
	$(BIN)/python -m benchmarks.backfill $(if $(BEFORE),--before $(BEFORE))

# A night of ~100 frames of 2048x2048 through Dagster end to end: wall time, time per frame, the share
# outside the science code, and landing-to-reduced latency under the daemon (~10 min, ~2 GB of disk).
bench-night: setup
	$(BIN)/python -m benchmarks.night

validate: setup
	REDUCTION_HOME=$(REDUCTION_HOME) $(BIN)/dagster definitions validate -w workspace.yaml

# The Dagster UI and daemon (sensors run) on the state in REDUCTION_HOME, at http://$(HOST):$(PORT)
# (`make dev HOST=0.0.0.0 PORT=3300` to serve other machines or avoid a busy port). `dagster dev`
# runs in DAGSTER_HOME: started beside the repository's dagster.yaml it would warn that this file is
# not used (it is: installed into DAGSTER_HOME above). PYTHONPATH keeps the code location this
# checkout's, as the repository's root as working directory did.
DEV_HOME = $(abspath $(REDUCTION_HOME))
dev: setup
	mkdir -p $(DEV_HOME)
	$(call instance_settings,$(DEV_HOME))
	cd $(DEV_HOME)/dagster && REDUCTION_HOME=$(DEV_HOME) DAGSTER_HOME=$(DEV_HOME)/dagster \
	  PYTHONPATH=$(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH)) \
	  $(CURDIR)/$(BIN)/dagster dev -w $(CURDIR)/workspace.yaml -h $(HOST) -p $(PORT)

clean:
	rm -rf $(VENV) $(DEMO_HOME) $(DEMO_HOME)-daemon .numba_cache .pytest_cache *.egg-info
