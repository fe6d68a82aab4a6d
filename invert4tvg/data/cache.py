"""A bounded on-disk cache of decoded frames, safe to share between processes.

GRPO decodes the same clip many times: G generations, four task variants, every epoch. An entry is keyed by the
file's identity (resolved path, size, modification time), the sampling settings, the clip and the backend, so an
edited file or a changed setting can never serve stale frames. Entries are written to a temporary file and
renamed into place (``os.replace`` is atomic on POSIX and Windows), so a concurrent reader sees either nothing or
a complete entry. Size is bounded: when the cache grows past ``max_bytes`` the least recently used entries go.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from invert4tvg.data.frames import DecodedVideo, VideoSpec

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the stored layout or the decoder's output changes
DEFAULT_MAX_BYTES = 4 * 1024**3
_SUFFIX = ".npz"


class FrameCache:
    """Decoded frames on disk under ``root``; ``hits`` and ``misses`` count lookups made through this instance."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self._approx_bytes = self.size_bytes()

    # -- keys -------------------------------------------------------------------------------------------------
    @staticmethod
    def key(spec: VideoSpec, backend: str = "pyav") -> str:
        """Cache key of ``spec``. Raises ``FileNotFoundError`` when the file does not exist."""
        path = os.path.realpath(spec.path)
        st = os.stat(path)
        clip = None if spec.clip is None else [round(float(t), 6) for t in spec.clip]
        ident = json.dumps(
            [CACHE_FORMAT, backend, path, st.st_size, st.st_mtime_ns, spec.sampling.key(), clip],
            separators=(",", ":"),
        )
        return hashlib.sha256(ident.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    # -- lookups ----------------------------------------------------------------------------------------------
    def get(self, key: str) -> DecodedVideo | None:
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                video = DecodedVideo(
                    frames=data["frames"],
                    timestamps=data["timestamps"],
                    frame_indices=data["frame_indices"],
                    source_fps=float(meta["source_fps"]),
                    range_num_frames=int(meta["range_num_frames"]),
                    path=meta["path"],
                    clip=None if meta["clip"] is None else (float(meta["clip"][0]), float(meta["clip"][1])),
                    range_start=int(meta["range_start"]),
                )
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
            # A damaged entry (disk full mid-copy, manual edits; a zero-byte file raises EOFError) is a miss, and
            # goes so it is rewritten.
            log.warning("dropping unreadable frame-cache entry %s: %s", path, err)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        with contextlib.suppress(OSError):  # evicted meanwhile: the frames are already in memory
            os.utime(path)  # recency for eviction
        return video

    def put(self, key: str, video: DecodedVideo) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "source_fps": video.source_fps,
            "range_num_frames": video.range_num_frames,
            "range_start": video.range_start_index,
            "path": video.path,
            "clip": None if video.clip is None else list(video.clip),
        }
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=_SUFFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                # Uncompressed: decoded frames are read far more often than written and zlib costs more than
                # the disk read it saves.
                np.savez(
                    fh,
                    frames=video.frames,
                    timestamps=video.timestamps,
                    frame_indices=video.frame_indices,
                    meta=np.array(json.dumps(meta)),
                )
            size = os.path.getsize(tmp)
            if size > self.max_bytes:
                os.unlink(tmp)
                return
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._approx_bytes += size
        if self._approx_bytes > self.max_bytes:
            self.evict()

    # -- housekeeping -----------------------------------------------------------------------------------------
    def _entries(self) -> list[tuple[float, int, Path]]:
        entries = []
        for path in self.root.glob(f"*/*{_SUFFIX}"):
            try:
                st = path.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            if path.name.startswith(".tmp-"):
                # A writer that died mid-entry leaves its temporary file; live writers finish in well under an hour.
                if time.time() - st.st_mtime > 3600:
                    path.unlink(missing_ok=True)
                continue
            entries.append((st.st_mtime, st.st_size, path))
        return entries

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def __len__(self) -> int:
        return len(self._entries())

    def evict(self, target_bytes: int | None = None) -> int:
        """Delete least recently used entries until at most ``target_bytes`` (default 90% of the bound) remain."""
        target = int(self.max_bytes * 0.9) if target_bytes is None else target_bytes
        entries = sorted(self._entries(), key=lambda e: e[0])
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, path in entries:
            if total <= target:
                break
            path.unlink(missing_ok=True)
            total -= size
            removed += 1
        self._approx_bytes = total
        return removed

    def clear(self) -> None:
        self.evict(target_bytes=0)
