"""The data cursor: a deterministic, resumable order over training record ids.

Epoch e visits the ids in a permutation seeded by (seed, e); the position is (epoch, offset), so a
checkpoint holding it resumes exactly where the killed run stopped. It hands out sample keys
`"<record_id>@<epoch>"`: the ledger's at-most-once guarantee is per sample, so a record may be trained
once per epoch. Keys handed out but not trained when the run died are re-issued first from the
checkpoint's in-flight list (see driver/loop.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medpo_ray.errors import MedpoError


@dataclass
class DataCursor:
    """Walks record ids epoch by epoch in a seeded order."""

    ids: list[str]
    seed: int = 0
    epoch: int = 0
    offset: int = 0
    _order: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.ids:
            raise MedpoError("the training split has no records: nothing to train on")
        if len(set(self.ids)) != len(self.ids):
            raise MedpoError("record ids are not unique in the training split")
        self.ids = sorted(self.ids)
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> list[str]:
        rng = np.random.default_rng([self.seed, epoch])
        return [self.ids[i] for i in rng.permutation(len(self.ids))]

    def take(self, n: int) -> list[str]:
        """The next n sample keys (wrapping into the next epoch's order when one ends)."""
        out: list[str] = []
        while len(out) < n:
            if self.offset == len(self._order):
                self.epoch += 1
                self.offset = 0
                self._order = self._permutation(self.epoch)
            k = min(n - len(out), len(self._order) - self.offset)
            out.extend(f"{i}@{self.epoch}" for i in self._order[self.offset : self.offset + k])
            self.offset += k
        return out

    @staticmethod
    def record_id(key: str) -> str:
        """The record id inside a sample key."""
        return key.rpartition("@")[0]

    def state(self) -> dict:
        """Position for a checkpoint."""
        return {"seed": self.seed, "epoch": self.epoch, "offset": self.offset, "n": len(self.ids)}

    @classmethod
    def restore(cls, ids: list[str], state: dict) -> DataCursor:
        """A cursor at a checkpointed position over the same ids."""
        if state["n"] != len(ids):
            raise MedpoError(f"the training split changed since the checkpoint ({state['n']} -> {len(ids)} "
                             "records): resume needs the same data")
        return cls(ids, seed=state["seed"], epoch=state["epoch"], offset=state["offset"])
