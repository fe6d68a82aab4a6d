"""Supervised warm start (grounding answers and Invert-SFT) through the policy interface."""
