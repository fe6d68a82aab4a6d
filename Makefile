# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
VENV          ?= .venv
PYTHON        ?= python3
TORCH_VERSION ?= 2.13.0
# Extra index for torch, e.g. https://download.pytorch.org/whl/cpu on a CPU machine whose default index
# serves CUDA wheels. Empty by default (our CPU machines resolve torch==2.13.0 to a local CPU build).
TORCH_INDEX   ?=
PY            := $(VENV)/bin/python
STAMP         := $(VENV)/.installed
export HF_HUB_OFFLINE = 1
export TOKENIZERS_PARALLELISM = false

.PHONY: install demo test lint format compare bench clean vllm-conformance

install: $(STAMP)

# torch goes in first and is then held by a constraint file, so no later requirement can swap the CPU build for
# several GB of CUDA wheels (docs/install.md explains why).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  echo "[make] CUDA machine: installing torch==$(TORCH_VERSION) (CUDA build)"; \
	else \
	  echo "[make] no CUDA: installing torch==$(TORCH_VERSION) (CPU build)"; \
	fi
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(PY) -c "from importlib.metadata import version; print('torch==' + version('torch'))" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/invert4tvg demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The vLLM engine against the real vLLM 0.32.0 code on CPU (downloads the wheel into a temporary directory; the
# venv is not changed): LLM keyword arguments, SamplingParams, a weight-sync message through vLLM's msgpack.
vllm-conformance: $(STAMP)
	$(PY) tests/vllm_conformance.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

compare: $(STAMP)
	$(VENV)/bin/invert4tvg compare --out runs/compare --report docs/results/compare

# gpu_smoke.py refuses to run without CUDA (a broken GPU setup must not look like a success): --tiny on CPU machines.
bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; \
	  if [ $$b = benchmarks/gpu_smoke.py ] && ! $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; \
	  then $(PY) $$b --tiny || exit 1; else $(PY) $$b || exit 1; fi; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
