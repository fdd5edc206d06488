# videxp — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The torch/torchvision pair that installs from the local wheel cache (CPU machines here); override for CUDA.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
# Extra Hydra overrides for the demo, e.g. DEMO_ARGS='trainer.max_steps=20000'
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo demo-interpolant demo-larp test test-full test-slurm lint format bench bench-gpu bench-gpu-wheels clean wandb-sync

help:  ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## Create .venv and install videxp with its dev tools (idempotent)

demo: $(STAMP)  ## Train a tiny FDM on moving_shapes, sample, evaluate beside the baselines (2 CPU cores: ~9 min)
	$(BIN)/python -m videxp.demo $(DEMO_ARGS)

# demo-interpolant: one run name for its four steps (stage-1 autoencoder run: <name>_ae)
INTERP_RUN := demo_interpolant_$(shell date +%Y-%m-%d_%H-%M-%S)

demo-interpolant: $(STAMP)  ## The interpolant family on the demo's shapes: VQ autoencoder, flow transformer, sample, evaluate
	$(BIN)/python -m videxp.train experiment=demo_interpolant_autoencoder run_name=$(INTERP_RUN)_ae
	$(BIN)/python -m videxp.train experiment=demo_interpolant run_name=$(INTERP_RUN) \
		model.autoencoder.ckpt=outputs/train/$(INTERP_RUN)_ae/checkpoints/last.ckpt $(DEMO_ARGS)
	$(BIN)/python -m videxp.sample experiment=demo_interpolant run_name=$(INTERP_RUN) \
		ckpt_path=outputs/train/$(INTERP_RUN) $(DEMO_ARGS)
	$(BIN)/python -m videxp.evaluate experiment=demo_interpolant run_name=$(INTERP_RUN) \
		eval_dir=outputs/sample/$(INTERP_RUN)/samples $(DEMO_ARGS)

# demo-larp: one run name for its four steps (stage-1 tokenizer run: <name>_tok)
LARP_RUN := demo_larp_$(shell date +%Y-%m-%d_%H-%M-%S)

demo-larp: $(STAMP)  ## LARP on the demo's shapes: tiny tokenizer, frame-prediction AR, sample, evaluate
	$(BIN)/python -m videxp.train experiment=demo_larp_tokenizer run_name=$(LARP_RUN)_tok
	$(BIN)/python -m videxp.train experiment=demo_larp run_name=$(LARP_RUN) \
		model.tokenizer.ckpt=outputs/train/$(LARP_RUN)_tok/checkpoints/last.ckpt $(DEMO_ARGS)
	$(BIN)/python -m videxp.sample experiment=demo_larp run_name=$(LARP_RUN) \
		ckpt_path=outputs/train/$(LARP_RUN) $(DEMO_ARGS)
	$(BIN)/python -m videxp.evaluate experiment=demo_larp run_name=$(LARP_RUN) \
		eval_dir=outputs/sample/$(LARP_RUN)/samples $(DEMO_ARGS)

test: $(STAMP)  ## Run the test suite (everything but `slow`, `gpu` and `slurm` tests)
	$(BIN)/python -m pytest -q

test-full: $(STAMP)  ## Run every CPU test, `slow` ones included
	$(BIN)/python -m pytest -q -m 'not gpu and not slurm'

test-slurm: $(STAMP)  ## Start a one-node SLURM (tests/slurm/cluster.sh, root) and run the `slurm` tests on it
	$(BIN)/python -m pytest -q -m slurm --durations=0 -s tests/slurm

lint: $(STAMP)  ## ruff lint + format check
	$(BIN)/ruff check videxp tests bench
	$(BIN)/ruff format --check videxp tests bench

format: $(STAMP)  ## ruff autofix + format
	$(BIN)/ruff check --fix videxp tests bench
	$(BIN)/ruff format videxp tests bench

bench: $(STAMP)  ## Print benchmark figures (throughput ratios; see bench/)
	@for f in bench/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# bench/gpu_suite.py: the wheels it carries to a GPU machine that has torch but not the rest (its WHEELS, pinned
# to .venv). For another Python or platform there, e.g.
#   make bench-gpu-wheels WHEEL_FLAGS='--python-version 3.12 --platform manylinux_2_28_x86_64'
WHEELHOUSE ?= wheels
WHEEL_FLAGS ?=
# The GPU machine's python with torch (.venv's when there is one); BENCH_GPU_ARGS e.g. '--sections fvd frames'
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
BENCH_GPU_ARGS ?=

bench-gpu:  ## One table of GPU figures (bench/gpu_suite.py; installs missing wheels from wheels/ if there)
	$(GPU_PYTHON) bench/gpu_suite.py $(if $(wildcard $(WHEELHOUSE)/*.whl),--wheelhouse $(WHEELHOUSE)) $(BENCH_GPU_ARGS)

bench-gpu-wheels: $(STAMP)  ## Download the wheels bench-gpu needs beyond torch into wheels/ (git-ignored)
	$(BIN)/python bench/gpu_suite.py --list-wheels | \
		xargs $(BIN)/python -m pip download -q --no-deps --only-binary=:all: $(WHEEL_FLAGS) -d $(WHEELHOUSE)

clean:  ## Remove caches and run outputs (keeps .venv)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
	find outputs multirun -mindepth 1 -not -name .gitkeep -delete 2>/dev/null || true

wandb-sync: $(STAMP)  ## Upload every offline wandb run under outputs/ and multirun/ (needs `wandb login`)
	@runs=$$(find outputs multirun -type d -name 'offline-run-*' -path '*/wandb/*' 2>/dev/null); \
	if [ -z "$$runs" ]; then echo "no offline wandb runs under outputs/ or multirun/"; \
	else $(BIN)/wandb sync $$runs; fi
