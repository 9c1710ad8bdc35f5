# Entry points: `make demo` and `make test` (both create .venv/ on first use); `make image` and `make e2e`
# (as root, on Debian 12: the image and a real cluster, see deploy/README.md and tests/e2e/README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kgpu-installed

IMAGE_ARCHIVE ?= build/kgpu-image.tar
# Every user of the machine's one lab takes this lock around anything that touches it; empty: no lock. flock -o: the
# lab's daemons that `lab up` starts must not inherit (and so hold) it after the run.
LAB_LOCK ?= $(wildcard /work/lab.lock)

.PHONY: demo test lint typecheck unit clean proto image e2e e2e-run e2e-dra

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy src

# The suite on every core (pytest-xdist): on this 2-core machine 1752 tests take about half the time they take on
# one (3 min 17 s instead of 6 min 52 s at load 6). Targeted runs (.venv/bin/pytest tests/x.py) stay on one.
unit: $(STAMP)
	$(BIN)/pytest -q -n auto

image: $(STAMP)
	bash deploy/image/build.sh $(IMAGE_ARCHIVE)
	bash deploy/image/check.sh $(IMAGE_ARCHIVE)

# The real-cluster suite: the lab from ../shared/lab on each of E2E_VERSIONS (or the cluster $$KUBECONFIG names).
e2e: image e2e-run

# The suite alone, on the image make image built last.
e2e-run: $(STAMP)
	$(if $(LAB_LOCK),flock -o $(LAB_LOCK)) $(BIN)/python tests/e2e/run.py --image-archive $(IMAGE_ARCHIVE)

# The DRA driver's part of it alone (tests/e2e/test_dra.py, lab v1.36; no image needed: the plugin runs on the host).
# flock -o in both: the lab's daemons, when a run starts them, must not inherit the lock and hold it forever.
e2e-dra: $(STAMP)
	$(if $(LAB_LOCK),flock -o $(LAB_LOCK)) $(BIN)/python tests/e2e/run.py --versions 1.36 -k test_dra

proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
