"""Subcommands of the ``invert4tvg`` command line (see ``invert4tvg/cli.py``)."""
