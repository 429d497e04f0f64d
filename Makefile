# lit_bvllm — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines: torch==2.13.0 resolves to the local CPU build. GPU clusters: `make install TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>"`
# or use environment.yml.
TORCH_SPEC ?= torch==2.13.0
ART ?= artifacts
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install demo test test-slow bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/.installed  ## create .venv and install the suite (CPU torch by default)

demo: install  ## tiny local backbones + synthetic videos, scan, then the main job on them
	$(BIN)/lit_bvllm make-tiny --out $(ART)/tiny
	$(BIN)/lit_bvllm make-synthetic --out $(ART)/synthetic --seed 0
	$(BIN)/lit_bvllm scan --config experiments/data/synthetic_finetune.yaml --out $(ART)/scan_finetune.json
	$(BIN)/lit_bvllm preview --config experiments/data/synthetic_finetune.yaml

test: install  ## the test suite (no network, no GPU; slow and gpu tests excluded)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" -p no:cacheprovider

test-slow:  install ## only the slow tests
	$(BIN)/python -m pytest -q -m "slow" -p no:cacheprovider

bench: install  ## data-loading benchmark (writes numbers to stdout; see benchmarks/RESULTS.md)
	$(BIN)/python benchmarks/bench_dataloading.py --out $(ART)/bench

clean:  ## remove generated artifacts (keeps .venv)
	rm -rf $(ART) runs lightning_logs
