"""CorruptionWorker: the corruption stage (x -> x~ per record) in a Ray actor."""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

import ray

from actors import metrics
from medpo_ray.config import CorruptionConfig, LossConfig
from medpo_ray.corruption import CorruptedImage, corrupt_records
from medpo_ray.data.record import Record
from medpo_ray.editing.pairs import PreferencePair
from medpo_ray.streaming.outcome import StageOutcome
from medpo_ray.training.collate import Collator


@ray.remote
class CorruptionWorker:
    """Corrupts each record's image by its lesion mask/boxes (seeded by record id).

    `corrupt` returns (meta, payload): meta has the notes by id and the bad records by id
    ("field: reason"); payload is the list of CorruptedImage (PNG bytes + note).
    """

    # Records prepared ahead whose pairs never came (rejected by the critic, dropped as stale) age out.
    PREPARED_MAX = 1024

    def __init__(self, cfg: CorruptionConfig | None = None, model_dir: str | None = None,
                 loss: LossConfig | None = None, max_length: int | None = None):
        self.cfg = cfg or CorruptionConfig()
        # Given the policy's directory, each finished pair goes through the learner's own collation check
        # here, so the learner never leaves one out of a step (its replacement comes before the step).
        self.collator = Collator(model_dir, loss or LossConfig(), max_length) if model_dir else None
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
                 ) -> tuple[StageOutcome, list[PreferencePair]]:
        """The pipeline's corruption stage: each pair with the x~ of its record added, checked as the learner
        will collate it. A record whose image cannot be corrupted, or a pair the learner could not take, is
        dropped with its reason ("field: reason"), the rest go on."""
        t0 = time.perf_counter()
        by_id = {r.record_id: r for r in records}
        meta, done = self.corrupt([by_id[p.record_id] for p in pairs])
        x_tilde = {c.record_id: c.image for c in done}
        out = [p.with_images(by_id[p.record_id].image, x_tilde[p.record_id]) for p in pairs if p.record_id in x_tilde]
        dropped = dict(meta["bad"])
        if self.collator is not None:
            refused = self.collator.check(out)
            for reason in refused.values():
                metrics.inc("medpo_bad_records_total", reason=f"learner:{reason.split(':')[0]}")
            dropped |= refused
            out = [p for p in out if p.record_id not in refused]
        notes = meta["notes"]  # what x~ is, for the audit: a record without mask or boxes gets "whole" noise
        audit = tuple({"record_id": p.record_id, "corruption_mode": notes[p.record_id]["mode"],
                       "corruption_region": notes[p.record_id]["region"]} for p in out)
        return StageOutcome("corruption", tuple(p.record_id for p in out), dropped,
                            versions={p.record_id: p.policy_version for p in out},
                            seconds=time.perf_counter() - t0, finished=time.time(), audit=audit), out
