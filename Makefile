# insitu: the two set-up commands are `make setup` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: setup test simulator venv clean help

help:
	@echo "make setup   virtual environment, package (editable) with PyTorch and ONNX, Icarus Verilog, Fashion-MNIST, pip toolchain"
	@echo "make test    import-layer contracts, then the whole test suite"
	@echo "make clean   remove build/"

setup: venv simulator
	@$(PY) -m insitu doctor

venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,torch,sweep]'

# Icarus Verilog and Fashion-MNIST come from Debian; installed when missing and we are allowed to.
# ccache (optional, also Debian) lets Verilator builds reuse the compiled simulator runtime.
DEBS := iverilog dataset-fashion-mnist ccache
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

simulator:
	@if command -v iverilog >/dev/null 2>&1 && [ -e $(FASHION) ] && command -v ccache >/dev/null 2>&1; then \
	    echo "iverilog: $$(iverilog -V 2>&1 | head -n1); Fashion-MNIST: $(dir $(FASHION))"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS); \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS); \
	elif command -v iverilog >/dev/null 2>&1 && [ -e $(FASHION) ]; then \
	    echo "ccache is missing and cannot be installed here: Verilator builds take longer"; \
	else \
	    echo "error: $(DEBS) are missing and cannot be installed here; install your distribution's packages" >&2; \
	    exit 1; \
	fi

test:
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --durations=15

clean:
	rm -rf build
