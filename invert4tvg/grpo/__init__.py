"""GRPO: advantages and losses (TRL's names and semantics), the training loop, checkpoints, step metrics."""
