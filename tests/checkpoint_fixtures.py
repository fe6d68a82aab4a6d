"""A checkpoint file that runs code when unpickled, for the tests that make sure nothing unpickles it."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class _MakeDir:
    """Unpickling calls ``os.mkdir(path)``: a harmless stand-in for any code an attacker would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def write_malicious_pickle(target: Path, marker: Path) -> Path:
    torch.save({"last_epoch": 2, "payload": _MakeDir(str(marker))}, target)
    return target
