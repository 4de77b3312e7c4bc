# Two entry points for a fresh machine: `make demo` and `make test`.
# The virtual environment is built from this repository's own files only.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   := demo_out

.PHONY: demo test install bench quality gpu-bench clean

install: $(STAMP)

# torch first from the local CPU wheel (plain `pip install torch` would pull a multi-GB CUDA build);
# scgpt with --no-deps (pyproject.toml says why); then the project with its real dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps scgpt==0.2.4
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ccfm demo --out $(DEMO)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# Speed benchmarks (extract, train, generate) -> docs/benchmarks.md + docs/benchmarks.json (minutes).
bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# The quality study: CCFM vs no-latent vs baselines, 3 folds. On the simulated Norman with random interactions and a
# toy scGPT pretrained 3 min on its control cells: the sweep of the cascade's knobs, the folds, the stage-by-stage
# diagnostics on every fold; the same with the random-weight toy; learnable (modules) interactions with the
# diagnostics; the simulated ComboSciPlex on its fixed split, with the pretrained toy and the sweep's pick
# -> docs/quality/<name>/
# (about 90 min on 2 cores, an estimate: the four were not timed alone; a rerun skips finished runs).
QUALITY := $(BIN)/python -m bench.quality
PICKED  := --no-sweep --variant prior-pca32-ptok
quality: $(STAMP)
	$(QUALITY) --pretrain-minutes 3 --interactions random --work bench/results/quality_random_pretrained --report docs/quality/random_pretrained
	$(QUALITY) $(PICKED) --interactions random --work bench/results/quality_random --report docs/quality/random
	$(QUALITY) $(PICKED) --pretrain-minutes 3 --interactions modules --work bench/results/quality_modules_pretrained --report docs/quality/modules
	$(QUALITY) $(PICKED) --no-diagnose --pretrain-minutes 3 --dataset combosciplex --work bench/results/quality_combosciplex_pretrained --report docs/quality/combosciplex

# The GPU benchmark (extraction, training, generation at full size; <= 8 min on one H200) -> $$OUT/gpu.md. Runs on the
# GPU machine with its own python3 (no venv): the wheels it lacks come from scripts/gpu_wheels.sh, carried in .whl/.
# `bash bench/gpu.sh --rehearse` runs it on a CPU at tiny sizes (tests/test_gpu_bench.py does).
gpu-bench:
	bash bench/gpu.sh

clean:
	rm -rf $(VENV) $(DEMO)
