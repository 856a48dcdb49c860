"""Supervised warm start of the policy (report and VQA grammar), with the auxiliary lesion-cell loss."""
