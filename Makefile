# lit_bvllm — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines: torch==2.13.0 resolves to the local CPU build. GPU clusters: `make install TORCH_SPEC="torch==2.13.0 --index-url <your CUDA index>"`
# or use environment.yml.
TORCH_SPEC ?= torch==2.13.0
ART ?= artifacts

.PHONY: help install demo lint test test-slow bench bench-streaming bench-reducers clean study-data study study-quick

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev,lmms]"
# lmms-eval (the optional extra of lit_bvllm.lmms_eval_model) without its dependencies: pyproject.toml's [lmms] extra
# lists the ones its evaluator, task loader and model API import (its own list conflicts: see the comment there)
	$(BIN)/pip install -q --no-deps "lmms-eval==0.7.3"
# litdata (frame shards) and torchcodec (the second decoder) without their dependencies: pyproject.toml lists what
# they import. torchcodec decodes with the system's FFmpeg libraries: installed from Debian when they are missing.
	$(BIN)/pip install -q --no-deps "litdata==0.2.76" "torchcodec==0.13.0"
	@ldconfig -p | grep -q libavfilter || { command -v apt-get >/dev/null && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg; }; } \
		|| { echo "torchcodec needs FFmpeg's libraries (4-7): install ffmpeg (apt-get install ffmpeg, conda install ffmpeg)"; exit 1; }
# DeepSpeed (the optional extra, for the strategy tests) ships as a source package that imports torch to build:
# without build isolation it builds against the torch above (no kernels are compiled: DS_BUILD_OPS=0).
	DS_BUILD_OPS=0 $(BIN)/pip install -q --no-build-isolation "deepspeed>=0.15,<1"
	@touch $@

install: $(BIN)/.installed  ## create .venv and install the suite (CPU torch by default)

demo: install  ## tiny backbones + synthetic videos, pretrain, finetune (LoRA), needle evaluation; prints the results
	$(BIN)/lit_bvllm make-tiny --out $(ART)/tiny
	$(BIN)/lit_bvllm make-synthetic $(SYNTHETIC_FLAGS)
	$(BIN)/lit_bvllm probe-tower --vision_tower $(ART)/tiny/vision --data $(ART)/synthetic --max_videos 400 --out $(ART)/probe_tiny_clip.json
# The demo's runs have fixed names (runs/pretrain/tiny, runs/finetune/tiny, runs/eval_needle/tiny and tiny_blind),
# which the next step and the report read; --overwrite true replaces an earlier demo's run in each, so that a
# second `make demo` starts afresh instead of being refused (a named run directory that holds a run is).
	$(BIN)/lit_bvllm fit --config experiments/pretrain.yaml --overwrite true
	$(BIN)/lit_bvllm fit --config experiments/pretrain.yaml --config experiments/finetune.yaml --overwrite true \
		--data.val $(ART)/synthetic/finetune_val.json
	$(BIN)/lit_bvllm test --config experiments/pretrain.yaml --config experiments/finetune.yaml \
		--config experiments/eval/base.yaml --config experiments/eval/needle.yaml --ckpt_path runs/finetune/tiny/checkpoints/last.ckpt \
		--trainer.logger.init_args.version tiny --overwrite true
	$(BIN)/lit_bvllm test --config experiments/pretrain.yaml --config experiments/finetune.yaml \
		--config experiments/eval/base.yaml --config experiments/eval/needle.yaml --ckpt_path runs/finetune/tiny/checkpoints/last.ckpt \
		--data.blind true --trainer.logger.init_args.version tiny_blind --overwrite true
	@echo; echo "Synthetic needle set (VNBench format, option likelihood, circular scoring):"
	@$(BIN)/python -m lit_bvllm.analysis.report model=runs/eval_needle/tiny/vnbench_results.json \
		blind=runs/eval_needle/tiny_blind/vnbench_results.json
	@echo; echo "Look at the runs: $(BIN)/tensorboard --logdir runs"

lint: install  ## ruff: pyflakes, isort, pyupgrade (pyproject.toml)
	$(BIN)/ruff check .

test: lint  ## lint, then the test suite (no network, no GPU; slow and gpu tests excluded)
	$(BIN)/python -m pytest -q -m "not slow and not gpu" -p no:cacheprovider

test-slow:  install ## only the slow tests
	$(BIN)/python -m pytest -q -m "slow" -p no:cacheprovider

bench: install  ## data-loading benchmark (writes numbers to stdout; see benchmarks/RESULTS.md)
	$(BIN)/python benchmarks/bench_dataloading.py --out $(ART)/bench

bench-streaming: install  ## shards against decoding on the fly, decord against torchcodec (see benchmarks/RESULTS.md)
	$(BIN)/python benchmarks/bench_streaming.py --out $(ART)/bench_streaming

bench-reducers: install  ## reducer cost against video length (see benchmarks/RESULTS.md)
	$(BIN)/python benchmarks/bench_reducers.py --out $(ART)/bench

# The demo's data (with 16 held-out videos' conversations, finetune_val.json, for its validation loss), and the
# needle study's (issue 13; lit_bvllm/study/runner.py): the demo's backbones and training set (these flags) and the
# held-out needle sets of 16, 64 and 128 s, each made only when missing.
NEEDLE_LENGTHS ?= 16 64 128
NEEDLE_VIDEOS ?= 50
comma := ,
space := $(subst ,, )
SYNTHETIC_FLAGS := --out $(ART)/synthetic --seed 0 --num-videos 1600 --max-duration 32 --min-fps 2 --max-fps 4 \
	--num-eval-videos 48 --eval-min-duration 64 --eval-max-duration 128 --num-val-videos 16

study-data: install  ## the study's backbones, training set and needle sets (each only when missing)
	@test -f $(ART)/tiny/llm/config.json || $(BIN)/lit_bvllm make-tiny --out $(ART)/tiny
	@test -f $(ART)/synthetic/finetune.json || $(BIN)/lit_bvllm make-synthetic $(SYNTHETIC_FLAGS)
	@(for L in $(NEEDLE_LENGTHS); do test -f $(ART)/synthetic/eval/needle_$${L}s/VNBench_qa.json || exit 1; done) \
		|| $(BIN)/lit_bvllm make-synthetic $(SYNTHETIC_FLAGS) --needle-lengths '[$(subst $(space),$(comma),$(strip $(NEEDLE_LENGTHS)))]' \
			--needle-videos $(NEEDLE_VIDEOS) --needles-only true

study: study-data  ## the needle study: every strategy at θ = 96, controls, ablation, 3-9 seeds; resumes; runs/sweeps/study
	$(BIN)/lit_bvllm study

study-quick: study-data  ## the study with one seed and the 64 s set only (runs/sweeps/study_quick)
	$(BIN)/lit_bvllm study --quick true

clean:  ## remove generated artifacts (keeps .venv)
	rm -rf $(ART) runs lightning_logs
