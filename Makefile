# Two entry points for a fresh machine: `make run` (set up, train the default) and `make test`.
# Both install what they need and are idempotent. Override TORCH for another build, e.g.
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
FMNIST_DIR = /usr/share/datasets/fashion-mnist
BIN = $(VENV)/bin

.PHONY: setup data run test gpu lint
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test,export,ray,tensorboard]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps foolbox==3.3.4  # real CIFAR/ImageNet test images
	touch $@

data:  # Fashion-MNIST from Debian's dataset-fashion-mnist; elsewhere sharenet downloads it
	@if [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
	  sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else echo "note: $(FMNIST_DIR) missing; sharenet will look in \$$SHARENET_DATA or download Fashion-MNIST"; fi

run: setup data
	$(BIN)/sharenet train

test: setup data
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/pytest -q

# A machine with a CUDA GPU: its own python3 and CUDA torch, as they are (no venv, no CPU wheel).
gpu: data
	python3 -m pip install -q -e . pytest
	python3 -m pytest -q -m cuda tests/test_cuda.py
	python3 -m sharenet bench --device cuda --model resnet32 --share stage --in-chans 1

lint: setup
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests
