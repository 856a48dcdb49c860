# medpo-ray: every target sets up .venv first if needed (scripts/setup.sh is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export VLLM_CPU_KVCACHE_SPACE ?= 1
export DS_ACCELERATOR ?= cpu
export TOKENIZERS_PARALLELISM ?= false
export PYTHONHASHSEED ?= 0
# OpenMP waiters that spin slow vLLM ~10x when learners share the cores (measured on 2 cores).
export OMP_WAIT_POLICY ?= PASSIVE
export VLLM_LOGGING_LEVEL ?= WARNING

.PHONY: setup setup-test demo test test-unit test-integration bench lint clean

setup:
	@scripts/setup.sh

setup-test:
	@scripts/setup.sh --with-prometheus --with-browser

demo: setup
	$(PY) -m driver.cli demo --config configs/demo.yaml

# All tests that fit CI's budget: unit, integration and slow.
test: setup-test
	$(PY) -m pytest -q tests

test-unit: setup
	$(PY) -m pytest -q -m unit tests

test-integration: setup-test
	$(PY) -m pytest -q -m "integration or slow" tests

bench: setup
	@for b in bench/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check medpo_ray actors driver tests bench

clean:
	rm -rf artifacts .pytest_cache
