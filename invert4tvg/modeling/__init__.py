"""Model passes, below ``policy/`` and ``rollout/``: processor inputs, log-probs, hidden-state readouts, the
shared-prefix layouts and mrope positions. Every pass of every engine and trainer is built from these parts, so a
convention (video timing, positions, vision tokens) is written once. Nothing here knows about heads, rollout engines
or trainers (docs/architecture.md)."""
