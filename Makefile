# zeroseg: set-up, tests and the main job. Every target creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision are pinned here (not in pyproject) so that users keep their own CUDA build.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PYTEST_WORKERS ?= 2

.PHONY: install test test-fast bench demo docs lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# --max-worker-restart 0: a crashed worker fails the run at once, naming its test (with a restart,
# pytest-xdist 3.8's loadgroup scheduler was seen waiting forever for the lost worker's tests)
test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --max-worker-restart 0

# the suite without the tests marked slow (each > ~30 s on 2 cores): the inner loop while editing
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadgroup --max-worker-restart 0 -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/zeroseg-bench

demo: $(STAMP)
	$(VENV)/bin/zeroseg demo --out out/demo

docs: $(STAMP)
	$(PY) -m mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info site
