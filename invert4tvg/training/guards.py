"""The check that keeps a run from saving garbage: non-finite weights.

A learning rate far too high can leave a step with a finite loss and NaN/inf weights; the next step then fails,
and a checkpoint written in between would hold the NaN weights (and ``--resume_from_checkpoint latest`` would pick
it). The parameters are checked after every update and before every save; the error names the last good checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from invert4tvg.training.checkpoint import list_checkpoints


class NonFiniteError(RuntimeError):
    """A step produced NaN/inf (loss or weights); the run stops and names the last good checkpoint."""


def nonfinite_parameters(model: torch.nn.Module, trainable_only: bool = True) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (one fused norm per parameter, one device sync)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    if not named:
        return []
    from torch.distributed.tensor import DTensor

    sharded = any(isinstance(p, DTensor) for _, p in named)
    # FSDP2: each process checks its own shards, and all of them learn the verdict (they must stop together).
    local = [p.to_local() if isinstance(p, DTensor) else p for _, p in named]
    norms = torch._foreach_norm([p.detach() for p in local])
    finite = torch.stack([n.float().to(norms[0].device) for n in norms]).isfinite()
    if sharded:
        flags = finite.to(torch.int32)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        finite = flags.bool()
    finite = finite.tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def last_good_checkpoint(run_dir: str | Path) -> str:
    found = list_checkpoints(Path(run_dir) / "checkpoints")
    if not found:
        return "none was saved (set save_steps to keep one)"
    return f"{found[-1]} (resume with --resume_from_checkpoint latest, with a lower learning_rate)"


def check_parameters(
    model: torch.nn.Module, step: int, run_dir: str | Path, what: str = "after step"
) -> None:
    """Raise :class:`NonFiniteError` when any trainable parameter is NaN/inf."""
    bad = nonfinite_parameters(model)
    if bad:
        raise NonFiniteError(
            f"{len(bad)} parameter tensors hold NaN/inf {what} {step} (first: {bad[0]}); the run stops and "
            f"nothing more is saved. Last good checkpoint: {last_good_checkpoint(run_dir)}. Lower learning_rate "
            "or max_grad_norm, or check the rewards."
        )
