"""Model-pass building blocks shared by the trainer and the rollout engines (positions, layouts)."""
