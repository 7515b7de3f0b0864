# shoprank: `make train` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch goes in first and pinned: the CPU build stays on CPU machines (this machine offers
# torch==2.13.0+cpu as a local wheel). Elsewhere set TORCH_SPEC / TORCH_INDEX, e.g.
#   make install TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,wandb,sweeps,serve
ARGS ?=

export WANDB_MODE ?= offline
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM ?= false

.DEFAULT_GOAL := help
.PHONY: help install train evaluate test test-slow test-all lint format bench bench-losses clean ablation compare test-ddp pretrain distill predict resume train-real bench-latency bench-finetune bench-framework bench-memory bench-inference bench-gpu allrank-venv reproduce reproduce-quick real-results smoke export check-inputs

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} \
		{name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1)} \
		END {for (i = 1; i <= NR; i++) printf "  \033[36m%-*s\033[0m  %s\n", width, name[i], text[i]}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -c "import torch; print('torch', torch.__version__, '| CUDA available:', torch.cuda.is_available())"
	touch $@

install: $(VENV)/.installed  ## Create .venv and install shoprank (keeps the CPU build of torch)

train: install  ## Train the default experiment (synthetic multi-region data, tiny BERT, CPU); ARGS="key=value ..."
	$(PY) -m experiments.train $(ARGS)

pretrain: install  ## Domain-adaptive masked-LM pretraining on the product corpus; ARGS="key=value ..."
	$(PY) -m experiments.pretrain $(ARGS)

distill: install  ## Distil a cross-encoder into a bi-encoder student: ARGS="teacher_ckpt=<ckpt> ..."
	$(PY) -m experiments.distill $(ARGS)

predict: install  ## Rank candidates -> run.trec + scores.parquet: ARGS="ckpt_path=<ckpt> [split=all] [export_onnx=true]"
	$(PY) -m experiments.predict $(ARGS)

train-real: install  ## Home Depot + CrowdFlower as two regions (needs ../shared/data)
	$(PY) -m experiments.train experiment=real_mix $(ARGS)

SEEDS ?= 0,1,2
REAL_STAMP := $(shell date +%Y%m%d-%H%M%S)
REAL_DIR ?= logs/real/$(REAL_STAMP)
real-results: install  ## The recipes on Home Depot and CrowdFlower, 3 seeds, vs every baseline -> experiments/results/real_data.md (~1.5 h CPU)
	$(PY) -m experiments.train -m experiment=crowdflower seed=$(SEEDS) hydra.sweep.dir=$(REAL_DIR)/crowdflower $(ARGS)
	$(PY) -m experiments.train -m experiment=homedepot seed=$(SEEDS) hydra.sweep.dir=$(REAL_DIR)/homedepot $(ARGS)
	$(PY) -m experiments.real_data_report crowdflower=$(REAL_DIR)/crowdflower homedepot=$(REAL_DIR)/homedepot

resume: install  ## Resume an interrupted run: make resume RUN=logs/train/runs/<run> ARGS="<the run's own overrides>"
	@test -n "$(RUN)" || { echo "usage: make resume RUN=<run dir> [ARGS=...]"; exit 2; }
	$(PY) -m experiments.train hydra.run.dir=$(RUN) ckpt_path=last $(ARGS)

evaluate: install  ## Evaluate a checkpoint: make evaluate ARGS="ckpt_path=... data=..."
	$(PY) -m experiments.evaluate $(ARGS)

export: install  ## Ship a model: make export ARGS="ckpt_path=<ckpt> out=<new dir>" (HF dir, sentence-transformers, ONNX, card)
	$(PY) -m experiments.export $(ARGS)

SMOKE_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
SMOKE_DIR ?= logs/smoke/$(SMOKE_STAMP)
smoke: install  ## About a minute end to end: train (experiment=smoke), evaluate + ir_measures cross-check, export, Ranker
	OMP_NUM_THREADS=1 $(PY) -m experiments.train experiment=smoke logger=csv \
		hydra.run.dir=$(SMOKE_DIR)/train trainer.enable_progress_bar=false $(ARGS)
	OMP_NUM_THREADS=1 $(PY) -m experiments.evaluate ckpt_path=$(SMOKE_DIR)/train/checkpoints/last.ckpt \
		+experiment=smoke cross_check=true hydra.run.dir=$(SMOKE_DIR)/evaluate trainer.enable_progress_bar=false
	OMP_NUM_THREADS=1 $(PY) -m experiments.export ckpt_path=$(SMOKE_DIR)/train/checkpoints/last.ckpt \
		out=$(SMOKE_DIR)/model hydra.run.dir=$(SMOKE_DIR)/export
	$(PY) -c "from ranking import Ranker; r = Ranker.from_pretrained('$(SMOKE_DIR)/model'); \
		print(r); print(r.rank('red running shoes', ['red running shoe', 'blue hat', 'shoe rack'], region=r.regions[0]))"
	@echo "smoke run OK: $(SMOKE_DIR)"

ABLATION_STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
ABLATION_DIR ?= logs/ablation/multiruns/$(ABLATION_STAMP)
ablation: install  ## SEQ+MD ablation: tower x region mask multirun (CPU, < 30 min), then its table and plots
	$(PY) -m experiments.train experiment=ablation hydra.sweep.dir=$(ABLATION_DIR) $(ARGS)
	$(PY) -m experiments.compare $(ABLATION_DIR) --with random,bm25 \
		--baseline tower=shared_bottom,region_mask=none --out experiments/results/ablation

reproduce: install  ## The papers' comparisons (losses, multi-task, SEQ+MD, distillation, pretraining), seeds 0-2, pretrained MiniLM on real data (~80 min from scratch on 2 CPU cores, 51 min after reproduce-quick) -> experiments/results/<study>.md
	$(PY) -m experiments.reproduce $(ARGS)

reproduce-quick: install  ## The same studies on the first seed only (~30 min on 2 CPU cores); `make reproduce` afterwards reuses its runs
	$(PY) -m experiments.reproduce --quick $(ARGS)

compare: install  ## Compare the runs of a sweep: make compare DIR=logs/<task>/multiruns/<date> [ARGS="--with random"]
	@test -n "$(DIR)" || { echo "usage: make compare DIR=<multirun dir>"; exit 2; }
	$(PY) -m experiments.compare $(DIR) $(ARGS)

test: install  ## Fast test suite (what CI runs)
	WANDB_MODE=disabled $(PY) -m pytest -m "not slow" -q $(ARGS)

test-ddp: install  ## Multirun x DDP regression tests (several processes, gloo on CPU, ~6 min)
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(PY) -m pytest -m "ddp" -q tests/integration/test_ddp_multirun.py $(ARGS)

check-inputs: install  ## Bad input end to end: hostile checkpoints, reused run dirs, kills mid-save, bad data/config (< 5 min)
	WANDB_MODE=disabled OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/integration/test_bad_inputs.py tests/integration/test_checkpoint_io.py $(ARGS)

test-slow: install  ## Slow tests only (end-to-end training runs)
	WANDB_MODE=disabled $(PY) -m pytest -m "slow" -q $(ARGS)

test-all: install  ## Every test
	WANDB_MODE=disabled $(PY) -m pytest -q $(ARGS)

lint: install  ## ruff check + format check + import contracts (layers, no Hydra in the library, no cycles)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: install  ## ruff fix + format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

ALLRANK_VENV ?= .venv-allrank
ALLRANK_SETUP ?= ../shared/tools/setup_allrank_venv.sh
allrank-venv:  ## allRank 1.4.3's losses in a side environment (.venv-allrank) for bench-losses, if the setup script is there
	@if [ -x $(ALLRANK_VENV)/bin/python ]; then echo "allRank environment: $(ALLRANK_VENV)"; \
	elif [ -f $(ALLRANK_SETUP) ]; then bash $(ALLRANK_SETUP) $(ALLRANK_VENV) \
		|| echo "allRank environment could not be made: benchmarks run without it"; \
	else echo "no $(ALLRANK_SETUP): benchmarks run without allRank"; fi

bench-losses: install allrank-venv  ## Every loss: time and memory vs a per-list loop, and the six allRank has vs allRank (same tensors, one run)
	OMP_NUM_THREADS=1 $(PY) -m bench.bench_losses --out bench/results/losses.json --allrank-python $(ALLRANK_VENV)/bin/python $(ARGS)

bench-latency: install  ## Teacher vs student per-query latency + NDCG@10 (newest distill run unless ARGS="--student .. --teacher ..")
	OMP_NUM_THREADS=1 $(PY) -m bench.bench_latency --out bench/results/latency.json --onnx $(ARGS)

bench-finetune: install  ## MiniLM cross-encoder fine-tune: pairs/s and NDCG@10 of fp32 vs each speed lever (bf16, buckets, ...)
	$(PY) -m bench.bench_finetune --out bench/results/finetune.json $(ARGS)

bench-framework: install  ## Lightning vs bare-loop throughput; data pipeline vs model lists/s
	OMP_NUM_THREADS=1 $(PY) -m bench.bench_framework --out bench/results/framework.json $(ARGS)

bench-memory: install  ## Peak RSS of the default experiment
	$(PY) -m bench.bench_memory --out bench/results/memory.json $(ARGS)

bench: install allrank-venv  ## Every benchmark in one go -> bench/results.json + bench/results.md (ARGS=--quick: a few min)
	OMP_NUM_THREADS=1 $(PY) -m bench.run_all $(ARGS)

bench-inference: install  ## Cross-encoder CPU inference: every inference.mode vs fp32 (pairs/s, NDCG@10 change)
	OMP_NUM_THREADS=1 $(PY) -m bench.bench_inference --out bench/results/inference.json $(ARGS)

bench-gpu: install  ## GPU benchmark (< 10 min): MiniLM training MFU in bf16, DDP on one device, eval throughput, student vs teacher -> bench/results_gpu.json; without CUDA one line, exit 0
	$(PY) -m bench.bench_gpu $(ARGS)

clean:  ## Remove outputs and caches (keeps .venv)
	rm -rf logs outputs .cache .pytest_cache .ruff_cache
