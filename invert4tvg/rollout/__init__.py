"""Rollout engines behind one contract (``base.py``): in-process transformers (``hf.py``), vLLM
(``vllm_engine.py``) and pools of Ray workers hosting either (``ray_pool.py``). ``builders.build_engine`` picks
one from the config; docs/rollouts.md explains them."""
