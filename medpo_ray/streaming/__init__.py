"""Streaming between the pipeline stages, without Ray: bounded queues counted in records (queues.py), the
typed result of a stage call (outcome.py) and a training step's accounting (steps.py)."""
