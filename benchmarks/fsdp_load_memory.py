"""Peak host memory (RSS) per process while an FSDP2 run loads its policy and reference, on 2 CPU processes.

    python benchmarks/fsdp_load_memory.py                       # builds a ~100 M-parameter random Qwen2.5-VL
    python benchmarks/fsdp_load_memory.py --model DIR            # or any saved model directory

Each process does what the GRPO trainer does before step 1 (``fsdp: full_shard``, fp32, no autocast): load the
policy as the recipe does (the main process reads the weights, the others build the model on the meta device when
the code supports it), build the reference, shard both. It prints each process's resident memory after its imports
and its peak (``ru_maxrss``), and the model's size, so the code on ``PYTHONPATH`` can be compared with another
checkout's. Numbers in docs/training.md ("Sharded training").
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def worker(model_dir: str, out: str) -> None:
    import torch
    from accelerate import Accelerator

    import invert4tvg  # noqa: F401  (first: torchvision shim)
    from invert4tvg.config import GRPOArguments, ModelArguments
    from invert4tvg.grpo import modelprep
    from invert4tvg.policy.loading import load_policy
    from invert4tvg.training import fsdp

    accelerator = Accelerator(cpu=True)
    args = GRPOArguments(output_dir=out, fsdp="full_shard", report_to=[])
    start = _rss_mb()
    options = {}
    if (
        "meta" in inspect.signature(load_policy).parameters
    ):  # the code under test loads on the main process only
        options["meta"] = not fsdp.reads_weights(args, accelerator)
    policy = load_policy(ModelArguments(model_name_or_path=model_dir, dtype="float32"), **options)
    ref = modelprep.build_reference(policy.model, accelerator, sharded=True)
    model = fsdp.shard(policy.model, accelerator)
    if not fsdp.is_sharded(ref):  # the skeleton, filled from the policy's shards
        ref = fsdp.shard_reference(ref, model, accelerator)
    params = sum(p.numel() for p in model.parameters())
    result = {
        "rank": accelerator.process_index,
        "meta": bool(options.get("meta")),
        "params_m": params / 1e6,
        "fp32_model_mb": params * 4 / 2**20,
        "rss_after_imports_mb": start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    torch.distributed.barrier()
    Path(out, f"rank{accelerator.process_index}.json").write_text(json.dumps(result))


def build_model(directory: Path) -> Path:
    from invert4tvg.policy.tiny_qwen import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(
        hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=8,
        num_key_value_heads=2, mrope_section=(16, 24, 24),
    )  # fmt: skip
    return build_tiny_model(directory, seed=0, spec=spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a saved model directory (default: build a random ~100 M model)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.worker:
        worker(cli.model, cli.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = cli.model or str(build_model(Path(tmp) / "model"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "HF_HUB_OFFLINE": "1"}
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
            "127.0.0.1", "--master_port", str(port), __file__, "--worker", "--model", model, "--out", tmp,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, env=env)
        for rank in (0, 1):
            print(json.loads(Path(tmp, f"rank{rank}.json").read_text()))


if __name__ == "__main__":
    main()
