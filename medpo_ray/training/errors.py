"""Errors of the learner: a failed rank, a checkpoint that cannot be used, a batch of the wrong shape."""
from __future__ import annotations

from medpo_ray.errors import MedpoError


class LearnerFailed(MedpoError, RuntimeError):
    """A learner rank died or raised: the group is unusable and the run resumes from its last checkpoint."""

    def __init__(self, rank: int, cause: str):
        super().__init__(f"learner rank {rank} failed: {cause}")
        self.rank = rank
        self.cause = cause

    def __reduce__(self):
        # Ray pickles exceptions across processes; the default reduce would call __init__ with one arg.
        return type(self), (self.rank, self.cause)


class CheckpointError(MedpoError):
    """A checkpoint directory that is missing, incomplete or written by an incompatible learner setup."""


class TrainBatchError(MedpoError, ValueError):
    """A training batch whose size does not fit the configured global batch."""
