"""One rank of ``torchrun --nproc_per_node 2`` for tests/test_rollout_vllm.py: writes what this rank would pass
to vLLM (``vllm_placement.placement``) and, where vLLM is installed, how vLLM's own ``EngineArgs`` reads it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import invert4tvg  # noqa: F401  (first: torchvision shim)
from invert4tvg.rollout.vllm_placement import placement


def vllm_reading(llm_kwargs: dict) -> dict | None:
    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        return None
    import vllm.envs as envs

    args = EngineArgs(model=os.environ["TINY_MODEL"], dtype="float32", max_model_len=2048, **llm_kwargs)
    config = args.create_engine_config()
    return {
        "backend": config.parallel_config.distributed_executor_backend,
        "seed": config.model_config.seed,
        "multiprocessing": bool(envs.VLLM_ENABLE_V1_MULTIPROCESSING),
    }


def main(out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    where = placement(True, 1, 7)
    where.apply()
    record = {
        "rank": where.rank,
        "device": where.device,
        "llm_kwargs": where.llm_kwargs,
        "env": where.env,
        "vllm": vllm_reading(where.llm_kwargs) if os.environ.get("TINY_MODEL") else None,
    }
    Path(out, f"rank{where.rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
