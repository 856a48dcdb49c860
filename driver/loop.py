"""The on-policy FiRe-MPO driver: rollout -> span edit -> corruption -> learner -> weight sync, streaming.

A training step trains exactly `train.batch_size` preference pairs. Prompts enter the pipeline in chunks
(`train.chunk_size` records); each chunk moves to the next stage as soon as its stage call returns,
through bounded queues of ObjectRefs held here (medpo_ray/streaming/queues.py): a stage call starts only
when its actor has a free slot and the queue it feeds has room for everything the call may return, so a
full queue stops its producer and a slow stage throttles the ones before it. The learner's queue is the
step window: examples of the open steps, at most batch_size x (1 + max_staleness). Payloads go into the
object store once, by their producer; the driver moves refs and each call's typed StageOutcome only.

A prompt dropped at any stage (the critic abstained, bad input, a pair the learner could not collate,
too stale) leaves a hole that a fresh prompt fills. Strict mode (`max_staleness: 0`) rolls out step k+1
only with the weights step k trained: each engine's load of them is queued right behind the learner
step, before any of step k+1's rollouts (Ray runs an actor's calls from one caller in order).
Bounded-async mode (`max_staleness: s`) keeps up to s further steps streaming while the learner trains,
and drops samples more than s policy versions old.
"""
from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import ray
import yaml
from tqdm import tqdm

from actors import driver_metrics
from actors.fleet import Fleet
from actors.guard_probe import PROBE_KEYS, GuardProbe
from actors.pool import StageError, StagePool
from medpo_ray.config import Config
from medpo_ray.critics.balance import OnPolicyBalance
from medpo_ray.cursor import DataCursor
from medpo_ray.errors import MedpoError
from medpo_ray.guard import Guard
from medpo_ray.ledger import Ledger
from medpo_ray.streaming.audit import AuditWriter, step_rows
from medpo_ray.streaming.outcome import StageOutcome
from medpo_ray.streaming.queues import BoundedQueue, Chunk
from medpo_ray.streaming.steps import StepBatch, StepUnfillable, check_records
from medpo_ray.streaming.timeline import overlap_share
from medpo_ray.training.errors import LearnerFailed

STATE_FILE = "driver_state.json"
METRICS_FILE = "metrics.jsonl"
STAGES = ("rollout", "editor", "corruption")  # each stage's input queue carries its name


class RunStopped(MedpoError):
    """A learner or stage failed for good; the message names the checkpoint a `--resume` continues from."""


class CheckpointFailed(MedpoError):
    """A checkpoint could not be written (a full or read-only disk, a rank that failed while saving)."""


class Driver:
    """Runs the on-policy loop over a Fleet of actors; owns the queues, ledger, cursor and checkpoints."""

    def __init__(self, cfg: Config, records: dict, fleet: Fleet, resume: bool = False,
                 probe_records: list | None = None, balance: OnPolicyBalance | None = None):
        check_records(cfg, records)
        self.cfg, self.records, self.fleet = cfg, records, fleet
        self.n = cfg.train.batch_size
        self.s = cfg.train.max_staleness
        self.out = Path(cfg.run.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        # The resolved recipe beside what it produced (the explorer shows it and finds the dataset by it).
        (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        self.ledger = Ledger()
        self.cursor = DataCursor(list(records), seed=cfg.run.seed)
        self.step = 0  # steps trained == policy version of the learner
        self.replay: list[str] = []  # keys in flight at the checkpoint we resumed from
        self.open: deque[StepBatch] = deque()  # steps issued and not yet training, oldest first
        self.training: tuple[list, float] | None = None  # the learner step in flight: its refs, when it began
        self.pools: dict[str, StagePool] = {"rollout": fleet.rollout, "editor": fleet.editor,
                                            "corruption": fleet.corruption}
        self.queues = {name: BoundedQueue(name, cfg.train.queue_capacity) for name in STAGES}
        self.window = self.n * (1 + self.s)  # the learner's queue: examples of the open steps
        self.max_learner_depth = 0
        self.calls: dict[str, Chunk] = {}  # first id of a stage call -> the chunk it was given
        self.timeline: list[tuple[str, float, float]] = []  # (stage, start, end) of every computation
        self.history: list[dict] = []
        self.last_checkpoint: Path | None = None
        self.last_sync_s = 0.0
        self.last_sync: dict = {}  # size of the last push: what put the next step's weights in the engines
        self.balance = balance  # counterfactual keep rates, refitted on-policy after each step
        self.audit = AuditWriter(self.out)  # <run>/audit/step-NNNNNN.parquet: every pair and why
        self.guard = GuardProbe(cfg, fleet, probe_records) if cfg.guard.every and probe_records else None
        if resume:
            self._restore()
        fleet.bind(self.ledger)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train until `train.steps` steps are done; returns the per-step metrics of this run."""
        try:
            return self._loop()
        except (LearnerFailed, StageError, StepUnfillable, CheckpointFailed) as e:
            where = (f"the last checkpoint is {self.last_checkpoint}: rerun with --resume to continue from it"
                     if self.last_checkpoint else "no checkpoint was written yet: rerun from the start")
            raise RunStopped(f"{e}; {where}") from None
        finally:
            self.audit.close()

    def _loop(self) -> list[dict]:
        total = self.cfg.train.steps
        bar = tqdm(total=total, initial=self.step, desc="fire-mpo", unit="step", dynamic_ncols=True)
        t0, pairs = time.monotonic(), 0
        if self.guard is not None and self.guard.guard.baseline is None:
            self.guard.probe(self.step)  # the warm start's baseline
        while self.step < total:
            self._open_steps(total)
            batch = self.open[0]
            began = time.time()
            self._pump(until=batch.complete)
            self.open.popleft()
            self._await_sync()  # the last step's weights are in every engine (strict mode: long since)
            gap = self._check_logprobs(batch)
            # The step's examples in id order, so the step does not depend on which call finished first.
            ids = sorted(batch.examples)[: self.n]
            self.training = (self.fleet.start_step([batch.examples[k] for k in ids], version=self.step + 1),
                             time.monotonic())
            self._open_steps(total)  # bounded async: the next steps stream while the learner trains
            self._pump(until=self._trained)
            metrics = self._finish(batch, ids, gap, began)
            verdict = self._guard_probe(total)
            if verdict is not None:
                metrics |= {f"probe_{k}": verdict[k] for k in PROBE_KEYS}
            if self.step % self.cfg.train.checkpoint_every == 0 or self.step == total or (verdict or {}).get("best"):
                self.checkpoint()
            if (verdict or {}).get("best"):
                self._mark("best", self.last_checkpoint)
            self._record(metrics)
            pairs += metrics["pairs"]
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                            acc=f"{metrics.get('reward_acc_pref', float('nan')):.2f}",
                            pairs_s=f"{pairs / (time.monotonic() - t0):.2f}", sync_s=f"{self.last_sync_s:.2f}")
            bar.update(1)
        self._await_sync()
        bar.close()
        return self.history

    def _open_steps(self, total: int) -> None:
        """Open steps while the window allows: 1 + max_staleness steps issued or training at once."""
        busy = 1 if self.training is not None else 0
        while busy + len(self.open) < 1 + self.s and self.step + busy + len(self.open) < total:
            self.open.append(StepBatch(self.step + busy + len(self.open), self.n))
            self._top_up(self.open[-1])

    def _trained(self) -> bool:
        """Whether the learner step in flight has finished (its refs are ready)."""
        refs, began = self.training
        if len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) == len(refs):
            return True
        limit = self.cfg.train.deadline_s("learner")
        if time.monotonic() - began > limit:
            raise LearnerFailed(f"learner step {self.step + 1}: no result within {limit:.0f} s (deadline); "
                                "the learner is hung")
        return False

    def _top_up(self, batch: StepBatch) -> None:
        """Issue prompts until the step's pending prompts and examples cover its batch, as far as the rollout
        queue has room (the rest on a later pass: the prompt source is throttled like any producer)."""
        need = batch.need()
        if need <= 0:
            return
        batch.check_budget(need, self.cfg.train.max_prompts_per_pair)
        q = self.queues["rollout"]
        take = min(need, q.free())
        if take <= 0:
            q.blocked += 1
            return
        keys, self.replay = self.replay[:take], self.replay[take:]  # replayed keys were issued before
        fresh = self.cursor.take(take - len(keys))
        self.ledger.issue(fresh)
        keys += fresh
        # Downstream everything is keyed by the sample key (record id @ epoch): a record seen again in a
        # later epoch is a new sample for the ledger, the corruption seed and the critic.
        samples = [replace(self.records[DataCursor.record_id(k)], record_id=k) for k in keys]
        for i in range(0, len(keys), self.fleet.chunk):
            part_ref = ray.put(samples[i:i + self.fleet.chunk])  # the prompts enter the object store once
            q.put(Chunk(keys[i:i + self.fleet.chunk], batch, part_ref))
            self.fleet.prepare_corruption(part_ref)
        batch.issue(keys)

    def _pump(self, until: Callable[[], bool]) -> None:
        """Stream: start every stage call the slots and queues allow, collect whatever finishes, move it on,
        top up the open steps; until `until()` holds."""
        while not until():
            self._feed()
            refs = [r for p in self.pools.values() for r in p.wait_refs()]
            refs += self.training[0] if self.training is not None else []
            if not refs:
                raise MedpoError("pipeline stalled: no stage has work but the step is incomplete "
                                 f"(queues: {[(q.name, q.depth, q.reserved) for q in self.queues.values()]})")
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for name in STAGES:
                for done in self.pools[name].collect(ready):
                    self._advance(name, done)
            for b in self.open:
                self._top_up(b)
            self._gauges()
            for p in self.pools.values():
                p.check_deadline()

    def _feed(self) -> None:
        """Start stage calls, downstream first (a call that drains a queue makes room for its producer): a
        chunk leaves its queue when its stage has a free slot and the next queue can hold all it may return."""
        for i in reversed(range(len(STAGES))):
            name = STAGES[i]
            inq, pool = self.queues[name], self.pools[name]
            outq = self.queues[STAGES[i + 1]] if i + 1 < len(STAGES) else None
            while inq.peek() is not None and pool.free_slots() > 0:
                chunk = inq.peek()
                if outq is not None and not outq.room(len(chunk.ids)):
                    break  # backpressure: the next stage has not taken enough of this one's output
                inq.take()
                if outq is not None:
                    outq.reserve(len(chunk.ids))
                self.calls[chunk.ids[0]] = chunk
                args = (chunk.records,) if chunk.payload is None else (chunk.records, chunk.payload)
                pool.submit(chunk.ids, *args)

    def _advance(self, name: str, done) -> None:
        """A stage call finished: account for its records and move the kept ones to the next queue (or, after
        the last stage, into their step as examples)."""
        chunk = self.calls.pop(done.ids[0])
        outcome: StageOutcome = done.meta
        batch = chunk.step
        kept, dropped = batch.settle(outcome, done.ids)
        if name == "rollout":
            if batch.probe is None and any(v == batch.step for v in outcome.versions.values()):
                batch.probe = (done.payload, chunk.records)  # written by the weights the step trains from
            if self.cfg.train.on_policy:
                # A sample trained more than s versions after the policy that wrote it is dropped and
                # replaced. The step window and the load queued before later rollouts keep every sample
                # within s versions, so this only guards that invariant (a drop would show as outcome
                # "stale" in medpo_records_total and in the ledger).
                stale = batch.stale(kept, self.s)
                batch.drop(stale)
                dropped |= stale
                kept = [k for k in kept if k not in stale]
        for key, code in dropped.items():
            self.ledger.drop([key], code)
        driver_metrics.stage_done(name, done.seconds, len(kept), list(dropped.values()))
        self.timeline.append(outcome.interval())
        i = STAGES.index(name)
        if i + 1 < len(STAGES):
            nxt = self.queues[STAGES[i + 1]]
            nxt.release(len(done.ids))
            nxt.put(Chunk(kept, batch, chunk.records, done.payload))
        else:
            batch.add_examples(kept, done.payload)
            self.ledger.start("learner", kept)  # an example waiting for its step is in flight, not lost

    def _gauges(self) -> None:
        waiting = sum(len(b.examples) for b in self.open)
        self.max_learner_depth = max(self.max_learner_depth, waiting)
        driver_metrics.queues(self.queues.values(), waiting, self.window)

    def _finish(self, batch: StepBatch, ids: list[str], gap: dict | None, began: float) -> dict:
        """The learner step is done: ledger, balance, the step's metrics."""
        refs, _ = self.training
        self.training = None
        metrics = self.fleet.finish_step(refs, version=self.step + 1)
        self.ledger.finish("learner", ids)
        trained = list(metrics.pop("trained_ids", ids))
        self.ledger.mark_trained(trained)
        self.ledger.drop([k for k in ids if k not in set(trained)], "learner:bad_example")
        staleness = batch.staleness(trained)
        self.step += 1
        pushed = metrics.pop("edit_tokens", {})
        driver_metrics.edit_tokens(pushed)
        if self.balance is not None:
            # Deterministic: a strict step's prompts are all settled before it trains, and each editor
            # call belongs to one step, so the rates depend on the steps trained, not on arrival order.
            self.balance.observe(batch.offered)
            self.fleet.set_keep_rates(self.balance.rates())
        if "t_start" in metrics:
            self.timeline.append(("learner", metrics.pop("t_start"), metrics.pop("t_end")))
        ended = time.time()
        overlap = overlap_share(self.timeline, began, ended)
        self.timeline = []  # calls still running are appended when they end, and clipped to their step
        self.audit.write(self.step, step_rows(self.step, batch.audit, batch.dropped, set(trained)))
        mix = Counter(batch.kinds.get(k, "?") for k in trained)
        return {"step": self.step, "pairs": len(trained),
                "staleness_max": max(staleness, default=0), "staleness_mean": sum(staleness) / max(len(staleness), 1),
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
                **({"logprob_mismatch": gap["logprob_max_abs_diff"],
                    "logprob_check_tokens": gap["tokens"]} if gap else {}),
                **self.last_sync,
                "tokens_down": pushed.get("down", {}), "tokens_up": pushed.get("up", {}),
                "pair_kinds": dict(sorted(mix.items())),
                "counterfactuals_offered": dict(sorted(batch.offered.items())),
                "rejections": dict(sorted(batch.rejections.items())),
                "stage_overlap": round(overlap, 4), "step_s": round(ended - began, 3),
                "queue_max_depth": {q.name: q.max_depth for q in self.queues.values()} | {"learner": self.max_learner_depth},
                "keys": trained, "_staleness": staleness}

    def _check_logprobs(self, batch: StepBatch) -> dict | None:
        """Before the learner steps it holds the weights the engines were given at the last sync: score a
        few rollouts of this step that those weights wrote (vLLM's log-probs vs the learner's forward)."""
        every = self.cfg.train.logprob_check_every
        if not every or batch.probe is None or self.step % every:
            return None
        gap = self.fleet.learners.logprob_gap(*batch.probe, version=self.step)
        if gap is not None:
            driver_metrics.logprob_mismatch(gap["logprob_max_abs_diff"])
        return gap

    def _guard_probe(self, total: int) -> dict | None:
        every = self.cfg.guard.every
        if self.guard is None or (self.step % every and self.step != total):
            return None
        return self.guard.probe(self.step)

    def _await_sync(self, stats: dict | None = None) -> None:
        """Wait for the weight sync in flight, if any; its span (optimizer step -> last engine loaded) is
        what the progress bar and Prometheus show."""
        stats = stats or self.fleet.finish_sync()
        if stats:
            self.last_sync_s = stats["sync_s"]
            self.last_sync = {"sync_bytes": stats["bytes"], "sync_omitted": stats.get("omitted", 0),
                              "sync_s": round(stats["sync_s"], 4)}
            driver_metrics.weight_sync(self.last_sync_s)

    def _record(self, metrics: dict) -> None:
        """Metrics of a finished step: Prometheus, the history and a line of metrics.jsonl."""
        driver_metrics.step_done(self.step, metrics, metrics.pop("_staleness"))
        self.history.append(metrics)
        with open(self.out / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics) + "\n")

    # -- checkpoint / resume --------------------------------------------------------------------
    def checkpoint(self) -> Path:
        """Learner state (model, optimizer, scheduler, RNG) + driver state, then an atomic 'latest'."""
        ckpt = self.out / "checkpoints" / f"step-{self.step:06d}"
        try:
            ckpt.mkdir(parents=True, exist_ok=True)
            self.fleet.learners.save_checkpoint(str(ckpt))
            # Async mode checkpoints with later steps in flight: their prompts are replayed on resume.
            in_flight = [k for b in self.open for k in b.issued if k not in self.ledger.dropped]
            state = {
                "step": self.step,
                "cursor": self.cursor.state(),
                "ledger": self.ledger.to_json(),
                "in_flight": in_flight,
                "time": time.time(),
                "guard": self.guard.guard.state() if self.guard is not None else None,
                "counterfactuals_offered": dict(self.balance.offered) if self.balance is not None else None,
            }
            (ckpt / STATE_FILE).write_text(json.dumps(state))
            self._mark("latest", ckpt)
        except (LearnerFailed, OSError) as e:
            # 'latest' still names the last complete checkpoint; this one stays incomplete (no learner.json
            # or driver state), which --resume never reads.
            raise CheckpointFailed(f"checkpoint {ckpt} could not be written ({e})") from None
        self.last_checkpoint = ckpt
        driver_metrics.checkpoint_written(state["time"])
        return ckpt

    def _mark(self, name: str, ckpt: Path) -> None:
        # checkpoints/<name> holds the step directory's name, replaced atomically.
        tmp = self.out / "checkpoints" / f"{name}.tmp"
        tmp.write_text(ckpt.name)
        tmp.replace(self.out / "checkpoints" / name)

    def _restore(self) -> None:
        latest = self.out / "checkpoints" / "latest"
        if not latest.exists():
            raise MedpoError(f"--resume: no checkpoint under {self.out / 'checkpoints'}")
        ckpt = self.out / "checkpoints" / latest.read_text().strip()
        state = json.loads((ckpt / STATE_FILE).read_text())
        self.fleet.learners.load_checkpoint(str(ckpt))
        self.step = state["step"]
        self.cursor = DataCursor.restore(list(self.records), state["cursor"])
        self.ledger = Ledger.from_json(state["ledger"])
        # Prompts in flight at the checkpoint were issued but never trained: replay them first, so the
        # resumed run trains the same records as an uninterrupted one.
        self.replay = list(state["in_flight"])
        self.ledger.in_flight = {}
        if self.guard is not None:
            self.guard.guard = Guard.restore(self.cfg.guard, state.get("guard"))
        if self.balance is not None:
            self.balance.offered = Counter(state.get("counterfactuals_offered") or {})
            self.fleet.set_keep_rates(self.balance.rates())
        self.last_checkpoint = ckpt
        self._forget_after(self.step)
        self.audit.forget_after(self.step)
        if self.cfg.train.on_policy:  # offline runs keep the warm start in the engines
            self._await_sync(self.fleet.sync_weights(version=self.step))

    def _forget_after(self, step: int) -> None:
        # Steps the killed run logged after its last checkpoint are trained again: keep one line per step.
        log = self.out / METRICS_FILE
        if log.exists():
            lines = [x for x in log.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= step]
            log.write_text("".join(x + "\n" for x in lines))
