# sclzoo — common tasks. `make demo` and `make test` work on a fresh clone (they install first).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.sclzoo-installed
PYTEST  := $(BIN)/python -m pytest
DEMO    ?= build/demo
N       ?= 64
ZOO     := resnet8_cifar.ce_mnist5k resnet8_cifar.supcon_mnist5k resnet8_cifar.simclr_mnist5k
DEMO_METHODS ?= saliency,integrated_gradients,gradcam
DEMO_METRICS ?= faithfulness_correlation,deletion_auc,insertion_auc,sparseness,complexity,effective_complexity,max_sensitivity,avg_sensitivity

.PHONY: install demo test test-all lint zoo cards cards-check clean help

help:
	@echo "make install   create $(VENV) and install sclzoo with pinned torch (idempotent)"
	@echo "make demo      evaluate the bundled zoo on $(N) MNIST-5k test images and print the leaderboard"
	@echo "make test      run the test suite (fast tests; 'make test-all' adds the slow ones)"
	@echo "make lint      ruff + mypy"
	@echo "make zoo       retrain and re-export the bundled zoo from zoo/recipes/"

install: $(STAMP)

# Re-runs only when the project metadata changes; torch/torchvision are pinned in pyproject.toml.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install
	@rm -rf $(DEMO)
	@for m in $(ZOO); do \
	  echo "== evaluating $$m on $(N) images"; \
	  $(BIN)/sclzoo evaluate --model zoo/models/$$m --n-samples $(N) --methods $(DEMO_METHODS) \
	    --metrics $(DEMO_METRICS) --out $(DEMO)/results || exit 1; \
	done
	$(BIN)/sclzoo leaderboard $(DEMO)/results --out $(DEMO)/leaderboard

test: install
	$(PYTEST) -m "not slow" -q

test-all: install
	$(PYTEST) -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy sclzoo zoo evaluator model_cards

zoo: install
	@for m in $(ZOO); do \
	  $(BIN)/sclzoo train --config zoo/recipes/$$m.toml --out build/checkpoints/$$m \
	    --export zoo/models/$$m --overwrite || exit 1; \
	done

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
