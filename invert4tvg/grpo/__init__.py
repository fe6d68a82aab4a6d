"""GRPO: advantages and losses (TRL's names and semantics), experience collection, the training loop, step metrics."""
