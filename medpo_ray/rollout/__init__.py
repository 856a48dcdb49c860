"""Rollout: the vLLM engine wrapper, weight sync into it, and the vLLM-vs-transformers log-prob check."""
