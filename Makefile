# sclzoo — common tasks. `make demo` and `make test` work on a fresh clone (they install first).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.sclzoo-installed
# olah (a Hub mirror server) serves git repos on 127.0.0.1 for tests/test_hub.py; it pins its own deps, so it
# gets its own virtualenv. It needs `git` on PATH.
OLAH_VENV  ?= .venv-olah
OLAH_STAMP := $(OLAH_VENV)/.olah-installed
PYTEST  := $(BIN)/python -m pytest
DEMO    ?= build/demo
N       ?= 64
DEMO_ZOO := resnet8_cifar.ce_mnist5k resnet8_cifar.supcon_mnist5k resnet8_cifar.simclr_mnist5k resnet8_cifar.triplet_mnist5k
# The same four recipes with patch deletion: in domain for single_deletion (docs/training.md#patch-deletion).
INDOMAIN_ZOO := resnet8_cifar.ce_mnist5k_indomain resnet8_cifar.supcon_mnist5k_indomain \
                resnet8_cifar.simclr_mnist5k_indomain resnet8_cifar.triplet_mnist5k_indomain
# The zoo on the ground-truth dataset mnist5k-clutter (56x56), all with patch deletion (docs/training.md#bundled-recipes).
CLUTTER_ZOO := resnet8_cifar.ce_mnist5k-clutter resnet8_cifar.supcon_mnist5k-clutter \
               resnet8_cifar.simclr_mnist5k-clutter resnet8_cifar.triplet_mnist5k-clutter
ZOO     := $(DEMO_ZOO) $(INDOMAIN_ZOO) $(CLUTTER_ZOO)
DEMO_METHODS ?= saliency,integrated_gradients,gradcam
DEMO_METRICS ?= faithfulness_correlation,deletion_auc,insertion_auc,single_deletion,sparseness,complexity,effective_complexity,max_sensitivity,avg_sensitivity

.PHONY: gpu-check install demo test test-integration test-reference test-slow test-all lint zoo cards cards-check listing leaderboard clean help bench publish-results

help:
	@echo "make install   create $(VENV) and install sclzoo with pinned torch (idempotent)"
	@echo "make demo      evaluate the bundled zoo on $(N) MNIST-5k test images and print the leaderboard"
	@echo "make test      the unit tier (needs neither chromium nor olah); README: Development"
	@echo "make test-integration  CLI end to end, loopback Hub (builds $(OLAH_VENV)), browser, jobs, leaderboard updates"
	@echo "make test-reference    agreement with Quantus, captum and MetaQuantus"
	@echo "make test-slow the slow tests (training, torchrun)"
	@echo "make test-all  every tier in one run"
	@echo "make lint      ruff + mypy"
	@echo "make zoo       retrain and re-export the bundled zoo from zoo/recipes/ (make -j2 zoo ZOO_THREADS=1: two at a time)"
	@echo "make cards     re-render the model cards (README.md) of the bundled zoo from their data"
	@echo "make cards-check  fail with a diff when a bundled model card drifted from its data"
	@echo "make listing   refresh the stored rows of sclzoo ls (evaluator/listing.json) after changing a registry"
	@echo "make leaderboard  evaluate (and meta-evaluate) registry models without a result (standard preset), rebuild leaderboard/"
	@echo "make bench     benchmarks (quiet machine, about an hour): metric suite vs Quantus vs floor, every method and (method, metric) vs its floor with peak memory -> build/bench/"
	@echo "make gpu-check on a CUDA machine: pytest -m gpu and the metric benchmark on the GPU -> build/gpu_check/gpu_check.md"

install: $(STAMP)

# Re-runs only when the project metadata changes; torch/torchvision are pinned in pyproject.toml. pip is not quiet:
# it lists what it collects and installs.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "== creating $(VENV) (a few seconds)"; $(PY) -m venv $(VENV); }
	@echo "== [1/2] upgrading pip in $(VENV) (~10 s)"
	$(BIN)/python -m pip install --progress-bar on --upgrade pip
	@echo "== [2/2] installing sclzoo (editable) with torch==2.14.1, torchvision, timm, captum, onnxruntime, quantus"
	@echo "   and the dev tools: ~1 GB, 5-8 minutes into a new $(VENV) on a 2-core machine, seconds when up to date"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	@touch $(STAMP)
	@echo "== installed: $(BIN)/sclzoo"

# The test Hub's read side (tests/hub_server.py) for tests/test_hub.py; only the integration tier needs it (its
# fixture creates it too when it is missing).
$(OLAH_STAMP):
	@command -v git >/dev/null 2>&1 || { echo "olah needs git: install it (e.g. apt-get install git)" >&2; exit 1; }
	@echo "== installing olah into $(OLAH_VENV) for the test Hub (~20 s)"
	@test -x $(OLAH_VENV)/bin/python || $(PY) -m venv $(OLAH_VENV)
	$(OLAH_VENV)/bin/pip install -q olah
	@touch $(OLAH_STAMP)

demo: install
	@rm -rf $(DEMO)
	@for m in $(DEMO_ZOO); do \
	  echo "== evaluating $$m on $(N) images"; \
	  $(BIN)/sclzoo evaluate --model zoo/models/$$m --n-samples $(N) --methods $(DEMO_METHODS) \
	    --metrics $(DEMO_METRICS) --out $(DEMO)/results || exit 1; \
	done
	@echo "== building the leaderboard (full Markdown: $(DEMO)/leaderboard/LEADERBOARD.md)"
	@$(BIN)/sclzoo leaderboard $(DEMO)/results --out $(DEMO)/leaderboard --quiet >/dev/null
	@echo
	@$(BIN)/python -m sclzoo.evaluator.summary $(DEMO)/leaderboard

# Test tiers (markers; tests/conftest.py puts every test without one in `unit` and sets each tier's timeout).
# `slow` wins over a module's integration/reference mark, hence the "and not slow".
test: install
	$(PYTEST) -m unit -q

test-integration: install $(OLAH_STAMP)
	$(PYTEST) -m "integration and not slow" -q

test-reference: install
	$(PYTEST) -m "reference and not slow" -q

test-slow: install
	$(PYTEST) -m slow -q

test-all: install $(OLAH_STAMP)
	$(PYTEST) -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy sclzoo zoo evaluator model_cards

# One target per model, so `make -j2 zoo ZOO_THREADS=1` trains two at a time (each on one thread); ZOO_THREADS
# empty = sclzoo's default thread count.
ZOO_THREADS ?= $(SCLZOO_THREADS)
zoo: $(addprefix zoo-train-,$(ZOO))

zoo-train-%: install
	SCLZOO_THREADS=$(ZOO_THREADS) $(BIN)/sclzoo train --config zoo/recipes/$*.toml --out build/checkpoints/$* \
	  --export zoo/models/$* --overwrite

cards: install
	$(BIN)/python -m sclzoo.zoo.cards

cards-check: install
	$(BIN)/python -m sclzoo.zoo.cards --check

# `sclzoo ls` prints stored rows (no torch import) while the registries' sources are unchanged; tests fail until
# this refreshes them (evaluator/listing.py).
listing: install
	$(BIN)/python -m sclzoo.evaluator.listing

# Registry-driven update (what the CI leaderboard job runs): evaluates only the zoo/registry.toml entries whose
# (commit sha, config hash) has no result in $(LB_RESULTS), meta-evaluates those without a meta result for that
# config (LB_META=--meta; the meta results sit beside the results, <meta_hash>.meta.json), then rebuilds $(LB_OUT)
# from all of them. Extra options go in LEADERBOARD_ARGS, e.g. LEADERBOARD_ARGS="--provenance ci --skip-unavailable";
# LB_META= skips the meta-evaluations (10-18 evaluations' worth of compute per model).
LB_RESULTS ?= leaderboard/results
LB_OUT     ?= leaderboard
LB_PRESET  ?= standard
LB_META    ?= --meta
leaderboard: $(STAMP)
	$(BIN)/sclzoo leaderboard-update --preset $(LB_PRESET) --results $(LB_RESULTS) --out $(LB_OUT) $(LB_META) $(LEADERBOARD_ARGS)

# After `make leaderboard`: write each registry model's scores into its Hub card (needs HF_TOKEN with write access;
# HF_ENDPOINT for a mirror). Models without results are reported and skipped.
publish-results: $(STAMP)
	@$(BIN)/python -c "from sclzoo.zoo.catalog import load_registry; print('\n'.join(e.id for e in load_registry()))" | \
	while read -r repo; do \
	  $(BIN)/sclzoo publish-results --repo "$$repo" --results $(LB_RESULTS) || echo "== skipped $$repo"; \
	done

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache

# Timing of sclzoo's metric suite vs Quantus 0.6.0 vs the model-call floor, and of every method and every
# (method, metric) cell of `sclzoo evaluate` vs its pass floor with peak memory per configuration (bench_matrix.py,
# about 26 min on 2 cores); run on a quiet machine.
# On a CUDA machine `make gpu-check` runs the gpu-marked tests and the metric benchmark on the GPU (bench/gpu_check.sh).
bench: install
	$(BIN)/python bench/bench_metrics.py --out build/bench
	$(BIN)/python bench/bench_matrix.py --out build/bench
	$(BIN)/python bench/bench_contention.py --out build/bench
	$(BIN)/python bench/bench_meta.py --out build/bench

gpu-check: install
	PY=$(BIN)/python bench/gpu_check.sh build/gpu_check
