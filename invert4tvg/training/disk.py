"""Writes that fail on a full disk say so: a full disk surfaces from ``torch.save`` as a bare C++ stream error
(``basic_ios::clear``); :func:`disk_guard` turns it into an ``OSError`` that says what happened and where."""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

# Messages with which torch's C++ writer, safetensors and Python report a failed write.
_WRITE_FAILURES = ("basic_ios::clear", "No space left", "unexpected pos", "file write failed", "Disk quota")


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
