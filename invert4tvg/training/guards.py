"""Checks that keep a run from saving garbage: non-finite weights and a full disk.

A learning rate far too high can leave a step with a finite loss and NaN/inf weights; the next step then fails,
and a checkpoint written in between would hold the NaN weights (and ``--resume_from_checkpoint latest`` would pick
it). The parameters are checked after every update and before every save. A full disk surfaces from ``torch.save``
as a bare C++ stream error (``basic_ios::clear``); :func:`disk_guard` turns it into an ``OSError`` that says what
happened and where.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

# Messages with which torch's C++ writer, safetensors and Python report a failed write.
_WRITE_FAILURES = ("basic_ios::clear", "No space left", "unexpected pos", "file write failed", "Disk quota")


class NonFiniteError(RuntimeError):
    """A step produced NaN/inf (loss or weights); the run stops and names the last good checkpoint."""


def nonfinite_parameters(model: torch.nn.Module, trainable_only: bool = True) -> list[str]:
    """Names of the parameters holding a NaN or an infinity (one fused norm per parameter, one device sync)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad or not trainable_only]
    if not named:
        return []
    norms = torch._foreach_norm([p.detach() for _, p in named])
    finite = torch.stack([n.float().to(norms[0].device) for n in norms]).isfinite().tolist()
    return [name for (name, _), ok in zip(named, finite) if not ok]


def last_good_checkpoint(run_dir: str | Path) -> str:
    from invert4tvg.training.checkpoint import list_checkpoints

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


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, (RuntimeError, OSError)) and any(m in str(err) for m in _WRITE_FAILURES)


@contextlib.contextmanager
def disk_guard(target: str | Path, what: str) -> Iterator[None]:
    """Re-raise a failed write under ``target`` as ``OSError(ENOSPC)`` naming the file system and its free space."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if not _is_disk_full(err):
            raise
        where = Path(target)
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            free = f"{shutil.disk_usage(where).free / 2**20:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        raise OSError(
            errno.ENOSPC,
            f"no space left on device while writing {what} to {target} ({free} on that file system; "
            f"the write failed with: {str(err).strip()[:120]}). Free space or move output_dir, then resume.",
        ) from err
