"""Evaluation of a policy: structured accuracy against findings ground truth, with baselines."""
