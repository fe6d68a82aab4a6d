"""The one error class every expected user mistake derives from.

A :class:`UserError` is something the user can fix from its message alone (a configuration value, a missing or
malformed file, an ``output_dir`` that holds another run, a checkpoint that cannot be resumed, videos that cannot be
decoded). The recipes print it as one line on stderr and exit with status 2 (``training/stops.py``), under
``python recipes/...`` and ``invert4tvg train``; ``accelerate launch -q`` prints the same line but exits with the
launcher's own status, 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_USER_ERROR = 2  # argparse's status for a usage error


class UserError(Exception):
    """An expected mistake in the input; its message names the file, field, flag or sample and what to do."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the configuration or command line names does not exist."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``; did you mean `x`?`` naming the closest of ``known``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""
