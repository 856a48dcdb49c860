"""CorruptionWorker: the corruption stage (x -> x~ per record) in a Ray actor."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import ray

from actors import metrics
from medpo_ray.config import CorruptionConfig
from medpo_ray.corruption import CorruptedImage, corrupt_records
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import PreferencePair
from medpo_ray.training.collate import TrainExample


@ray.remote
class CorruptionWorker:
    """Corrupts each record's image by its lesion mask/boxes (seeded by record id).

    `corrupt` returns (meta, payload): meta has the notes by id and the bad records by id
    ("field: reason"); payload is the list of CorruptedImage (PNG bytes + note).
    """

    # Records prepared ahead whose pairs never came (rejected by the critic, dropped as stale) age out.
    PREPARED_MAX = 1024

    def __init__(self, cfg: CorruptionConfig | None = None):
        self.cfg = cfg or CorruptionConfig()
        self._prepared: OrderedDict = OrderedDict()  # record id -> CorruptedImage or BadRecord

    def prepare(self, records: Sequence[Record], *after) -> int:
        """Corrupt records ahead of their pairs: the driver asks for this beside the rollout of the same
        records, on a core the rollout leaves idle, and `examples` takes the results from here (x~
        depends on the record alone, seeded by its id). `after`: results Ray must have before it runs
        this (the engines' weight loads, which would otherwise share their cores with it); unused.
        Returns how many are held."""
        done, bad = corrupt_records(records, self.cfg)
        for item in [*done, *bad]:
            self._prepared[item.record_id] = item
        while len(self._prepared) > self.PREPARED_MAX:
            self._prepared.popitem(last=False)
        return len(self._prepared)

    def _corrupt(self, batch: Sequence[Record], control: bool) -> tuple[list, list]:
        """(done, bad) for the batch, prepared results first (taken out of the cache), the rest now."""
        ready = {} if control else {r.record_id: self._prepared.pop(r.record_id) for r in batch
                                    if r.record_id in self._prepared}
        done, bad = corrupt_records([r for r in batch if r.record_id not in ready], self.cfg, control=control)
        for item in ready.values():
            (done if isinstance(item, CorruptedImage) else bad).append(item)
        return done, bad

    def corrupt(self, batch: Sequence[Record], control: bool = False) -> tuple[dict, list[CorruptedImage]]:
        """Corrupt a batch; control=True moves the region to a lesion-free place (evaluation)."""
        done, bad = self._corrupt(batch, control)
        for c in done:
            metrics.inc("medpo_corruptions_total", mode=c.note["mode"], region=c.note["region"])
        for b in bad:
            # The field without its index (boxes[3] -> boxes): label values stay a small fixed set.
            metrics.inc("medpo_bad_records_total", reason=f"corruption:{b.field.split('[')[0]}")
        meta = {"notes": {c.record_id: c.note for c in done},
                "bad": {b.record_id: f"{b.field}: {b.reason}" for b in bad}}
        return meta, done

    def examples(self, records: Sequence[Record], pairs: Sequence[PreferencePair]
                 ) -> tuple[dict, list[TrainExample]]:
        """The pipeline's corruption stage: x~ for each pair's record, joined into TrainExamples.

        meta: {"ids": example ids in payload order, "bad": {id: "field: reason"}}; a record whose image
        cannot be corrupted is reported and left out, the rest go on.
        """
        by_id = {r.record_id: r for r in records}
        wanted = [by_id[p.record_id] for p in pairs]
        meta, done = self.corrupt(wanted)
        x_tilde = {c.record_id: c.image for c in done}
        out = [TrainExample.from_pair(p, by_id[p.record_id], x_tilde[p.record_id])
               for p in pairs if p.record_id in x_tilde]
        return {"ids": [e.example_id for e in out], "bad": meta["bad"]}, out
