"""Multi-stage jobs built from the recipes: ``make demo`` (:mod:`.demo`) and ``make compare`` (:mod:`.compare`).

The CLI wrappers live in :mod:`invert4tvg.commands`; these modules hold what they run.
"""
