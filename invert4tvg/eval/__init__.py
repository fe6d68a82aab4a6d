"""Evaluation: metrics (``metrics``), the evaluation runner, and reports, plots and grounding visualisations."""
