"""The on-policy FiRe-MPO driver: rollout -> span edit -> corruption -> learner -> weight sync.

A training step trains on exactly `train.batch_size` preference pairs. The driver hands prompts to the
rollout stage in chunks; a prompt whose answer the critic cannot turn into a valid pair is dropped
with its reason and a top-up prompt takes its place, until the step has its pairs. Payloads go into the
object store once, by their producer; the driver moves refs and small metadata only.
Strict mode (`max_staleness: 0`) rolls out step k+1 only with the weights step k trained: each engine's
load of them is queued, right behind the learner step, before any of step k+1's rollouts (Ray runs an
actor's calls from one caller in order), so the driver never waits for the sync itself. Bounded-async
mode (`max_staleness: s`) keeps up to s further steps generating while the learner trains, and drops
samples more than s policy versions old.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import ray
from tqdm import tqdm

from actors import driver_metrics
from actors.fleet import Fleet
from actors.guard_probe import PROBE_KEYS, GuardProbe
from actors.pool import StageError
from medpo_ray.config import Config
from medpo_ray.critics.balance import OnPolicyBalance
from medpo_ray.cursor import DataCursor
from medpo_ray.errors import MedpoError
from medpo_ray.guard import Guard
from medpo_ray.ledger import Ledger
from medpo_ray.training.errors import LearnerFailed

STATE_FILE = "driver_state.json"
METRICS_FILE = "metrics.jsonl"


class RunStopped(MedpoError):
    """A learner or stage failed for good; the message names the checkpoint a `--resume` continues from."""


@dataclass
class StepBatch:
    """One training step: the prompts issued for it and the examples they have become so far."""

    step: int
    issued: list[str] = field(default_factory=list)
    examples: dict[str, tuple] = field(default_factory=dict)  # key -> (chunk payload ref, index)
    versions: dict[str, int] = field(default_factory=dict)  # key -> policy version that wrote y0
    kinds: dict[str, str] = field(default_factory=dict)  # key -> "A:<edit kinds>" or "B:<counterfactual>"
    offered: Counter = field(default_factory=Counter)  # counterfactual keys the critic chose for its prompts
    pending: int = 0  # prompts issued and not yet an example or a drop
    rejections: dict[str, int] = field(default_factory=dict)
    probe: tuple | None = None  # (rollout payload ref, records ref) of one chunk, for the log-prob check


def pair_kind(meta: dict) -> str:
    """A pair's label in metrics.jsonl: its branch, then the edit kinds (A) or the counterfactual's balance key
    (B, when the critic gives one): "A:laterality", "B:presence:no>a"."""
    if meta.get("branch") == "B" and meta.get("counterfactual"):
        return f"B:{meta['counterfactual']}"
    return f"{meta.get('branch', '?')}:{'+'.join(sorted(set(meta.get('kinds', [])))) or '?'}"


def check_records(cfg: Config, records: dict) -> None:
    """A training split that cannot fill one step is a clear error before any actor starts."""
    if len(records) < cfg.train.batch_size:
        raise MedpoError(f"the training split of {cfg.data.path!r} has {len(records)} usable records, fewer "
                         f"than train.batch_size={cfg.train.batch_size}: lower the batch size or add data")
    if cfg.rollout.n != 1:
        raise MedpoError("rollout.n must be 1 for training: the paper builds one pair per prompt from "
                         "the greedy answer (n > 1 is for evaluation and benchmarks)")


class Driver:
    """Runs the on-policy loop over a Fleet of actors; owns the ledger, cursor and checkpoints."""

    def __init__(self, cfg: Config, records: dict, fleet: Fleet, resume: bool = False,
                 probe_records: list | None = None, balance: OnPolicyBalance | None = None):
        check_records(cfg, records)
        self.cfg, self.records, self.fleet = cfg, records, fleet
        self.n = cfg.train.batch_size
        self.s = cfg.train.max_staleness
        self.out = Path(cfg.run.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger()
        self.cursor = DataCursor(list(records), seed=cfg.run.seed)
        self.step = 0  # steps trained == policy version of the learner
        self.replay: list[str] = []  # keys in flight at the checkpoint we resumed from
        self.open: deque[StepBatch] = deque()
        self.where: dict[str, tuple[StepBatch, ray.ObjectRef]] = {}  # key -> its step and records ref
        self.history: list[dict] = []
        self.last_checkpoint: Path | None = None
        self.last_sync_s = 0.0
        self.balance = balance  # counterfactual keep rates, refitted on-policy after each step
        self.guard = GuardProbe(cfg, fleet, probe_records) if cfg.guard.every and probe_records else None
        if resume:
            self._restore()
        fleet.bind(self.ledger)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        """Train until `train.steps` steps are done; returns the per-step metrics of this run."""
        try:
            return self._loop()
        except (LearnerFailed, StageError) as e:
            where = (f"the last checkpoint is {self.last_checkpoint}: rerun with --resume to continue from it"
                     if self.last_checkpoint else "no checkpoint was written yet: rerun from the start")
            raise RunStopped(f"{e}; {where}") from None

    def _loop(self) -> list[dict]:
        total = self.cfg.train.steps
        bar = tqdm(total=total, initial=self.step, desc="fire-mpo", unit="step", dynamic_ncols=True)
        t0, pairs = time.monotonic(), 0
        if self.guard is not None and self.guard.guard.baseline is None:
            self.guard.probe(self.step)  # the warm start's baseline
        while self.step < total:
            while len(self.open) < 1 + self.s and self.step + len(self.open) < total:
                self.open.append(StepBatch(self.step + len(self.open)))
                self._top_up(self.open[-1])
            batch = self.open[0]
            self._pump(until=lambda b=batch: len(b.examples) >= self.n)
            self.open.popleft()
            self._await_sync()  # the last step's weights are in every engine (strict mode: long since)
            metrics = self._train(batch)  # its export and the engines' loads are queued right behind it
            verdict = self._guard_probe(total)
            if verdict is not None:
                metrics |= {f"probe_{k}": verdict[k] for k in PROBE_KEYS}
            if self.step % self.cfg.train.checkpoint_every == 0 or self.step == total or (verdict or {}).get("best"):
                self.checkpoint()
            if (verdict or {}).get("best"):
                self._mark("best")
            self._record(metrics)
            pairs += metrics["pairs"]
            bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}",
                            acc=f"{metrics.get('reward_acc_pref', float('nan')):.2f}",
                            pairs_s=f"{pairs / (time.monotonic() - t0):.2f}", sync_s=f"{self.last_sync_s:.2f}")
            bar.update(1)
        self._await_sync()
        bar.close()
        return self.history

    def _top_up(self, batch: StepBatch) -> None:
        """Issue prompts until the step's pending prompts and examples cover its batch."""
        need = self.n - len(batch.examples) - batch.pending
        if need <= 0:
            return
        if len(batch.issued) + need > self.cfg.train.max_prompts_per_pair * self.n:
            raise MedpoError(
                f"step {batch.step}: {len(batch.issued)} prompts gave only {len(batch.examples)} valid pairs "
                f"(rejections: {batch.rejections}); the critic rejects almost everything: check the critic "
                "configuration and the policy's outputs (train.max_prompts_per_pair bounds the prompts a pair may take)")
        keys, self.replay = self.replay[:need], self.replay[need:]  # replayed keys were issued before
        fresh = self.cursor.take(need - len(keys))
        self.ledger.issue(fresh)
        keys += fresh
        # Downstream everything is keyed by the sample key (record id @ epoch): a record seen again in a
        # later epoch is a new sample for the ledger, the corruption seed and the critic.
        samples = [replace(self.records[DataCursor.record_id(k)], record_id=k) for k in keys]
        chunk = self.fleet.rollout_chunk
        for i in range(0, len(keys), chunk):
            part_ref = ray.put(samples[i:i + chunk])  # the prompts enter the object store once
            self.where.update((k, (batch, part_ref)) for k in keys[i:i + chunk])
            self.fleet.rollout.submit(keys[i:i + chunk], part_ref)
            self.fleet.prepare_corruption(part_ref)
        batch.issued += keys
        batch.pending += len(keys)

    def _pump(self, until) -> None:
        """Move finished stage calls on to the next stage until `until()` holds."""
        f = self.fleet
        while not until():
            refs = f.rollout.wait_refs() + f.editor.wait_refs() + f.corruption.wait_refs()
            if not refs:
                raise MedpoError("pipeline stalled: no stage has work but the step is incomplete")
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for done in f.rollout.collect(ready):
                batch, records = self.where[done.ids[0]]
                good = self._settle(batch, "rollout", done.ids, [k for k in done.ids if k not in done.meta["bad"]],
                                    done.meta["bad"], done.seconds)
                if good:
                    f.editor.submit(good, records, done.payload)
                    if batch.probe is None and done.meta["policy_version"] == batch.step:
                        batch.probe = (done.payload, records)  # written by the weights the step trains from
            for done in f.editor.collect(ready):
                batch, records = self.where[done.ids[0]]
                versions = {p["record_id"]: p["policy_version"] for p in done.meta["pairs"]}
                paired = self._settle(batch, "editor", done.ids, list(versions), done.meta["rejected"], done.seconds)
                batch.versions.update(versions)
                batch.kinds.update((p["record_id"], pair_kind(p)) for p in done.meta["pairs"])
                batch.offered.update(done.meta.get("offered", {}))
                # Bounded async: a sample that will be trained more than s versions after the policy that
                # wrote it is dropped (counted) and replaced; strict mode never sees one.
                stale = {k: "stale" for k in paired if self.cfg.train.on_policy and batch.step - versions[k] > self.s}
                keys = self._settle(batch, "staleness", paired, [k for k in paired if k not in stale], stale)
                driver_metrics.stale_dropped(len(stale))
                if keys:
                    f.corruption.submit(keys, records, done.payload)
            for done in f.corruption.collect(ready):
                batch, _ = self.where[done.ids[0]]
                made = self._settle(batch, "corruption", done.ids, done.meta["ids"], done.meta["bad"], done.seconds)
                batch.examples.update((key, (done.payload, i)) for i, key in enumerate(made))
                batch.pending -= len(made)
                self.ledger.start("learner", made)  # an example waiting for its step is in flight, not lost
            for b in self.open:
                self._top_up(b)
            driver_metrics.stages((f.rollout, f.editor, f.corruption), sum(len(b.examples) for b in self.open),
                                  self.n * (1 + self.s))
            for st in (f.rollout, f.editor, f.corruption):
                st.check_deadline()

    def _settle(self, batch: StepBatch, stage: str, ids: list[str], kept: list[str], dropped: dict[str, str],
                seconds: float | None = None) -> list[str]:
        """Account for a stage's answer on `ids`: `kept` go on, the rest leave the step counted with their
        reason from `dropped`; an id the stage returned neither way is dropped as missing, not left to
        stall the step."""
        kept_set = set(kept)
        codes = {k: f"{stage}:{str(dropped.get(k, 'missing')).split(':')[0]}" for k in ids if k not in kept_set}
        for key, code in codes.items():
            self.ledger.drop([key], code)
            batch.rejections[code] = batch.rejections.get(code, 0) + 1
        batch.pending -= len(codes)
        driver_metrics.stage_done(stage, seconds, len(kept), list(codes.values()))
        return kept

    def _train(self, batch: StepBatch) -> dict:
        """One learner step on exactly `batch_size` fresh-enough examples, in key order (so the step does
        not depend on which stage call finished first)."""
        ids = sorted(batch.examples)
        gap = self._check_logprobs(batch)
        metrics = self.fleet.train_step([batch.examples[k] for k in ids], version=self.step + 1)
        self.ledger.finish("learner", ids)
        trained = list(metrics.pop("trained_ids", ids))
        self.ledger.mark_trained(trained)
        self.ledger.drop([k for k in ids if k not in set(trained)], "learner:bad_example")
        for k in batch.issued:
            self.where.pop(k, None)
        staleness = [self.step - batch.versions[k] for k in trained]
        self.step += 1
        pushed = metrics.pop("edit_tokens", {})
        driver_metrics.edit_tokens(pushed)
        if self.balance is not None:
            # Deterministic: a strict step's prompts are all settled before it trains, and each editor
            # call belongs to one step, so the rates depend on the steps trained, not on arrival order.
            self.balance.observe(batch.offered)
            self.fleet.set_keep_rates(self.balance.rates())
        mix = Counter(batch.kinds.get(k, "?") for k in trained)
        return {"step": self.step, "pairs": len(trained),
                "staleness_max": max(staleness, default=0), "staleness_mean": sum(staleness) / max(len(staleness), 1),
                **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
                **({"logprob_mismatch": gap["logprob_max_abs_diff"],
                    "logprob_check_tokens": gap["tokens"]} if gap else {}),
                "tokens_down": pushed.get("down", {}), "tokens_up": pushed.get("up", {}),
                "pair_kinds": dict(sorted(mix.items())),
                "counterfactuals_offered": dict(sorted(batch.offered.items())),
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
        self.last_checkpoint = ckpt
        self._mark("latest")
        driver_metrics.checkpoint_written(state["time"])
        return ckpt

    def _mark(self, name: str) -> None:
        # checkpoints/<name> holds the step directory's name, replaced atomically.
        tmp = self.out / "checkpoints" / f"{name}.tmp"
        tmp.write_text(self.last_checkpoint.name)
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
        if self.cfg.train.on_policy:  # offline runs keep the warm start in the engines
            self._await_sync(self.fleet.sync_weights(version=self.step))

    def _forget_after(self, step: int) -> None:
        # Steps the killed run logged after its last checkpoint are trained again: keep one line per step.
        log = self.out / METRICS_FILE
        if log.exists():
            lines = [x for x in log.read_text().splitlines() if x.strip() and json.loads(x)["step"] <= step]
            log.write_text("".join(x + "\n" for x in lines))


def _ray_init(cfg: Config) -> None:
    """Join the cluster of a `ray job submit` (RAY_ADDRESS set) or start a local one on loopback."""
    import os

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # inside a job: the runtime env is the job's
        return
    _check_port_free(cfg.metrics.host, cfg.metrics.export_port)
    if cfg.metrics.host.startswith("127."):
        # Without this Ray swaps 127.0.0.1 for the host's address and binds its ports on every interface.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=max(cfg.run.ray_num_cpus or 0, os.cpu_count() or 1, _cpus_needed(cfg)),
             include_dashboard=False, _metrics_export_port=cfg.metrics.export_port,
             _node_ip_address=cfg.metrics.host, log_to_driver=cfg.run.log_actors)


def _check_port_free(host: str, port: int) -> None:
    # Ray's node does not report a taken metrics port: it times out starting, with no word of the port.
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise MedpoError(f"metrics.export_port {port} on {host} is not available ({e.strerror}): another "
                             "Ray or service holds it; pick a free port with --set metrics.export_port=N") from None


def _cpus_needed(cfg: Config) -> int:
    # Logical CPUs for the placement: stages interleave in strict mode, so a 2-core machine can host
    # learners (1 each) + engines (1 each) + light actors without real oversubscription.
    light = 0.25 * (cfg.critic.num_editors + cfg.corruption.num_workers)
    return int(math.ceil(cfg.train.num_learners * cfg.train.cpus_per_rank
                         + cfg.rollout.num_engines * cfg.rollout.cpus_per_engine + light))


def load_train_records(cfg: Config, data_dir: Path) -> dict:
    """The training split as {record_id: Record}; bad records are reported and left out."""
    from medpo_ray.sft.run import load_split

    records, bad = load_split(cfg, data_dir, "train")
    for b in bad[:10]:
        print(f"[data] quarantined: {b}")
    if bad:
        print(f"[data] {len(bad)} bad record(s) quarantined; {len(records)} good")
    return {r.record_id: r for r in records}


def counterfactual_balance(cfg: Config, records: dict) -> OnPolicyBalance | None:
    """The reference critic's counterfactual balance, its prior fitted on this training split's gold answers
    (critics/balance.py; the prior's rates are written to the run directory); None for other critics."""
    from medpo_ray.critics import reference_offer_totals
    from medpo_ray.critics.balance import OnPolicyBalance

    totals = reference_offer_totals(cfg.critic, records.values())
    if totals is None:
        return None
    balance = OnPolicyBalance(totals)
    keep = balance.rates()
    out = Path(cfg.run.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "counterfactual_balance.json").write_text(json.dumps(keep, indent=1))
    print(f"[critic] counterfactual keep rates fitted on {len(records)} training records' gold answers, "
          f"refitted on-policy after each step; {sum(v < 1 for v in keep.values())} of {len(keep)} swaps thinned")
    return balance


def load_probe_records(cfg: Config, data_dir: Path) -> list | None:
    """The guard's held-out split (guard.split), or None (guard off, or no such split: said once)."""
    if not cfg.guard.every:
        return None
    if not cfg.train.on_policy:
        print("[guard] offline run (train.on_policy: false): the engines keep the warm start, so the probe is off")
        return None
    from medpo_ray.sft.run import load_split

    try:
        records, _ = load_split(cfg, data_dir, cfg.guard.split)
    except MedpoError as e:
        print(f"[guard] cannot read the {cfg.guard.split!r} split of {data_dir} ({e}): the probe against harm is off")
        return None
    if not records:
        print(f"[guard] no {cfg.guard.split!r} split in {data_dir}: the probe against harm is off")
        return None
    return records


def train(cfg: Config, model_dir: str, data_dir: Path, resume: bool = False) -> dict:
    """Run the on-policy loop from `model_dir` (HF VLM); returns a summary with the ledger's counts."""
    records = load_train_records(cfg, Path(data_dir))
    check_records(cfg, records)
    balance = counterfactual_balance(cfg, records)
    probe_records = load_probe_records(cfg, Path(data_dir))
    _ray_init(cfg)
    t0 = time.monotonic()
    fleet = Fleet(cfg, model_dir, keep_rates=balance.rates() if balance is not None else None)
    try:
        driver = Driver(cfg, records, fleet, resume=resume, probe_records=probe_records, balance=balance)
        driver.run()
    finally:
        fleet.shutdown()
    summary = {"steps": driver.step, "seconds": round(time.monotonic() - t0, 1), **driver.ledger.summary(),
               "checkpoint": str(driver.last_checkpoint),
               "weight_transport": fleet.weight_transport,
               **(driver.guard.summary(model_dir, driver.out) if driver.guard is not None else {})}
    (driver.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
