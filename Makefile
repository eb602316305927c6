# panns_lightning — every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

DEMO_DIR := data/demo
DEMO_RATE := 16000
DEMO_SECONDS := 2
DEMO_RUN := outputs/demo/runs/make-demo-$(shell date +%Y%m%d-%H%M%S)
AUDIOSET_SHARDS ?= data/audioset/shards
GPUS ?= 1
# make pretrain DRY_RUN=1: print the config, world size, first shards per rank, epoch time; train nothing.
DRY_RUN ?=
SWEEP_STEPS ?= 90
SWEEP_EPOCH ?= 30
ARGS ?=
FT_ARGS ?=
# make demo's precision: bf16 autocast where the CPU has native bf16 (avx512_bf16 / amx_bf16), fp32
# elsewhere (docs/speed.md); DEMO_PRECISION=32-true forces fp32.
DEMO_PRECISION ?= $${cpu_precision:}
# make test runs the suite in TEST_WORKERS processes (pytest-xdist, in the dev extras): on 2 cores
# 860 tests took 6 min 23 s with 2 (this round, a quiet host; the Slurm test skipped). TEST_WORKERS=0: one process, no xdist.
TEST_WORKERS ?= 2
PYTEST_ARGS ?= $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS))

DATA ?= esc50
CKPT ?=
FT_SWEEP := outputs/finetune_$(DATA)/multiruns/make-$(shell date +%Y%m%d-%H%M%S)

.PHONY: help install demo demo-data lint test test-fast docs docs-serve bench bench-train bench-data bench-tag sweep pretrain finetune hear-check clean

help:
	@echo "make demo      install, make synthetic AudioSet-format data, train Cnn6 on CPU, evaluate"
	@echo "make lint      ruff (lint + format check) and the import contracts of docs/architecture.md"
	@echo "make test      install and run the test suite (make test-fast: without the tests marked slow)"
	@echo "make docs      build the documentation site into site/ (mkdocs --strict; make docs-serve: on localhost:8000)"
	@echo "make bench     print throughput figures (converter, stream, train step), make bench-train's table, live tagging's RTF"
	@echo "make bench-train  panns-train's whole loop vs the bare step: clips/s, ratio, workers needed, GPU util, MFU"
	@echo "make bench-data  streamed shards (int16/FLAC) vs PANNs-style HDF5 + balanced sampler, clips/s"
	@echo "make bench-tag   panns-tag over 40 x 10 s files vs upstream's Cnn14 as panns_inference drives it (files/s, latency, memory)"
	@echo "make pretrain  AudioSet pretraining (needs shards under $(AUDIOSET_SHARDS); GPUS=N; DRY_RUN=1: the plan, no training)"
	@echo "make sweep     Hydra multirun of the demo over mixup x SpecAugment + sweep_summary.{md,csv,png}"
	@echo "make finetune  DATA=esc50|gtzan|ravdess CKPT=path: every fold + cv_summary.{json,md} + confusion matrix"
	@echo "make hear-check  the official HEAR 2021 validator on panns_lightning.hear (own venv .venv-hear, TensorFlow)"

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

demo-data: install
	$(BIN)/panns-prepare synthetic --out $(DEMO_DIR)/raw --overwrite
	$(BIN)/panns-prepare audioset --segments $(DEMO_DIR)/raw/balanced_train_segments.csv \
		--audio-dir $(DEMO_DIR)/raw/audio --labels $(DEMO_DIR)/raw/class_labels_indices.csv \
		--out $(DEMO_DIR)/shards/train --sample-rate $(DEMO_RATE) --clip-seconds $(DEMO_SECONDS) \
		--val-fraction 0.1 --val-out $(DEMO_DIR)/shards/val --clips-per-shard 256 --overwrite
	$(BIN)/panns-prepare audioset --segments $(DEMO_DIR)/raw/eval_segments.csv \
		--audio-dir $(DEMO_DIR)/raw/audio --labels $(DEMO_DIR)/raw/class_labels_indices.csv \
		--out $(DEMO_DIR)/shards/eval --sample-rate $(DEMO_RATE) --clip-seconds $(DEMO_SECONDS) \
		--clips-per-shard 128 --overwrite

demo: demo-data
	$(BIN)/panns-train experiment=demo 'trainer.precision=$(DEMO_PRECISION)' hydra.run.dir=$(DEMO_RUN) $(ARGS)
	$(BIN)/panns-eval ckpt_path=$(DEMO_RUN)/checkpoints/best.ckpt data_dir=$(DEMO_DIR)/shards/eval \
		hydra.run.dir=$(DEMO_RUN)/eval
	PY=$(PY) FT_ARGS='trainer.precision=$(DEMO_PRECISION) $(FT_ARGS)' bash scripts/demo_finetune.sh $(DEMO_RUN)/checkpoints/best.ckpt

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache --no-logo

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "make test: FAILED: pytest collected no tests (exit 5); a suite that runs nothing proves nothing" >&2; fi; exit $$rc

# The tests that neither train nor start a process (marker "slow" in pyproject.toml): a minute or two.
test-fast: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "make test-fast: FAILED: pytest collected no tests (exit 5)" >&2; fi; exit $$rc

# The documentation site (mkdocs.yml, docs/): --strict turns a broken link, a missing page or a
# docstring the API reference cannot render into an error. CI runs it.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site
	@echo "docs: site/index.html"

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

bench: install
	$(PY) benchmarks/run.py $(ARGS)
	$(PY) benchmarks/bench_loop.py
	$(PY) benchmarks/bench_stream.py

bench-train: install
	$(PY) benchmarks/bench_loop.py $(ARGS)

bench-data: install
	$(PY) benchmarks/bench_data.py $(ARGS)

# Whole-process files/s, first-result latency, peak memory and model-only clips/s against upstream's
# model class (needs the dev extra's panns-inference); ARGS='--rounds 5', '--ours-args "--backend torch"'.
bench-tag: install
	nice -n 5 $(PY) benchmarks/bench_tag.py $(ARGS)

sweep: demo-data
	$(BIN)/panns-train -m experiment=demo trainer.max_steps=$(SWEEP_STEPS) data.steps_per_epoch=$(SWEEP_EPOCH) test=false \
		augment.mixup.alpha=0.2,1.0 augment.specaugment.enabled=true,false $(ARGS)
	@echo "report: outputs/demo/multiruns/<latest>/sweep_summary.{md,csv,png}"

pretrain: install
	@if [ ! -f $(AUDIOSET_SHARDS)/full_train/manifest.json ] || [ ! -f $(AUDIOSET_SHARDS)/full_train_val/manifest.json ] \
		|| [ ! -f $(AUDIOSET_SHARDS)/eval/manifest.json ]; then \
		echo "No AudioSet shards under $(AUDIOSET_SHARDS)/{full_train,full_train_val,eval}. Make them first, e.g.:"; \
		echo "  $(BIN)/panns-prepare audioset --segments /path/unbalanced_train_segments.csv --audio-dir /path/audio \\"; \
		echo "      --labels /path/class_labels_indices.csv --out $(AUDIOSET_SHARDS)/full_train --val-fraction 0.02 --workers 32"; \
		echo "  (2% held out for validation into full_train_val; then eval_segments.csv --out $(AUDIOSET_SHARDS)/eval, the test set)"; \
		exit 1; fi
	$(BIN)/panns-train experiment=pretrain_audioset trainer=ddp trainer.devices=$(GPUS) \
		data.train_dir=$(AUDIOSET_SHARDS)/full_train data.val_dir=$(AUDIOSET_SHARDS)/full_train_val \
		data.test_dir=$(AUDIOSET_SHARDS)/eval $(if $(DRY_RUN),dry_run=true) $(ARGS)

finetune: install
	@test -n "$(CKPT)" || { echo "usage: make finetune DATA=esc50|gtzan|ravdess CKPT=checkpoint"; exit 2; }
	@test -f data/$(DATA)/shards/manifest.json || { echo "make data/$(DATA)/shards first: $(BIN)/panns-prepare $(DATA) --root ... --out data/$(DATA)/shards (see docs/finetune/$(DATA).md)"; exit 1; }
	@# Every fold the shard set holds (its manifest says which): one job each.
	folds=$$($(PY) -m panns_lightning.shardset.folds data/$(DATA)/shards) && \
	$(BIN)/panns-finetune -m experiment=finetune_$(DATA) data.fold=$$folds finetune.checkpoint=$(CKPT) hydra.sweep.dir=$(FT_SWEEP) $(ARGS)
	$(BIN)/panns-cv-report $(FT_SWEEP)

# hearvalidator imports TensorFlow: it gets its own venv (.venv-hear), which takes torch and the
# other dependencies from $(VENV) instead of installing them twice. It validates two panns-export files
# read through their model cards: a 16 kHz, 32-mel Cnn6 and a Cnn14 saved as model.pth.
hear-check: install
	TORCH_VENV=$(VENV) bash scripts/hear_check.sh

clean:
	rm -rf outputs multirun .pytest_cache
