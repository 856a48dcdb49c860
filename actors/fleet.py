"""The Fleet: every actor of one run, placed by Ray resources, behind the stage pools the driver uses.

Placement is by resources only, so the same code packs onto a 2-core machine (light actors take a
fraction of a CPU, stages interleave) or spreads over a GPU cluster (rollout engines and learner ranks
ask for GPUs through `rollout.gpus_per_engine` / `train.gpus_per_rank`).
"""
from __future__ import annotations

import time
from dataclasses import replace

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from actors.corruption import CorruptionWorker
from actors.learner import LearnerGroup
from actors.pool import StageError, StagePool
from actors.rollout import RolloutActor
from actors.span_editor import SpanEditor
from medpo_ray.config import Config
from medpo_ray.critics.vqa_answers import AnswerVocabulary
from medpo_ray.errors import MedpoError
from medpo_ray.ledger import Ledger
from medpo_ray.rollout.engine import RolloutRequest, SamplingSpec

# Ray restarts a killed stage actor this many times; the pool re-issues its in-flight records.
STAGE_RESTARTS = 3
# Seconds an engine or editor may take to construct (a model load); the learner group has its own set-up
# timeout. Generous: a 7B engine loads and profiles its KV cache in a few minutes.
STARTUP_S = 900.0


class Fleet:
    """Rollout engines, span editors, corruption workers and the learner group of one run."""

    def __init__(self, cfg: Config, model_dir: str, ledger: Ledger | None = None,
                 keep_rates: dict[str, float] | None = None, vocab: AnswerVocabulary | None = None):
        r, t = cfg.rollout, cfg.train
        ledger = ledger or Ledger()
        restartable = {"max_restarts": STAGE_RESTARTS, "max_task_retries": 0}
        self.rollout_actors = [
            RolloutActor.options(num_cpus=r.cpus_per_engine, num_gpus=r.gpus_per_engine, **restartable)
            .remote(model_dir, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
                    kv_cache_gib=r.kv_cache_gib, seed=r.seed, enable_prefix_caching=r.prefix_caching)
            for _ in range(r.num_engines)]
        # A restarted editor is built again from these arguments: the vocabulary survives restarts.
        editors = [SpanEditor.options(num_cpus=0.25, **restartable).remote(cfg.critic, None, model_dir, keep_rates,
                                                                           vocab)
                   for _ in range(cfg.critic.num_editors)]
        workers = [CorruptionWorker.options(num_cpus=0.25, **restartable).remote(
            cfg.corruption, model_dir, cfg.loss, cfg.model.max_model_len)
                   for _ in range(cfg.corruption.num_workers)]
        self.spec = SamplingSpec.from_config(r)
        self.chunk = t.chunk(r.num_engines)  # records per stage call
        self.rollout = StagePool("rollout", self.rollout_actors, "rollout", ledger,
                                 deadline_s=t.deadline_s("rollout"), on_restart=self._resync,
                                 extra_args=(self.spec,))
        self.keep_rates = keep_rates
        self.editor = StagePool("editor", editors, "edit_rollouts", ledger, deadline_s=t.deadline_s("editor"),
                                on_restart=self._rebalance)
        self.corruption = StagePool("corruption", workers, "examples", ledger,
                                    deadline_s=t.deadline_s("corruption"))
        # Engines must be up before the learner group claims its CPUs for DeepSpeed set-up.
        self._started("rollout engine", [a.policy_version.remote() for a in self.rollout_actors], model_dir)
        self._started("span editor", [e.counts.remote() for e in editors], model_dir)
        try:
            self.learners = LearnerGroup(model_dir, t, cfg.loss, seed=cfg.run.seed,
                                         max_length=cfg.model.max_model_len)
        except BaseException:
            self._kill_stages()
            raise
        self.prefetch = cfg.corruption.prefetch
        self._prepared_calls = 0
        self.shared_weights = self._shared_weights(r.weight_transport)
        # What the last sync used: rank 0 falls back to the object store when /dev/shm has no room.
        self.weight_transport = "shared_memory" if self.shared_weights else "object_store"
        self.weights_ref: ray.ObjectRef | None = None
        self._export: list = []  # rank summaries of the export in flight
        self._loads: list = []  # the engines' loads in flight
        self.on_policy = cfg.train.on_policy  # off: the engines keep the warm start (offline pairs)
        self.defer_sync = cfg.train.max_staleness > 0  # async: sync after the step, not queued behind it
        # After the first (full) push, pushes carry only what training changes (rollout.partial_sync); an
        # engine Ray restarts gets a full export of its own before it serves.
        self.partial_sync = r.partial_sync
        self._last_partial = False
        self.version = 0

    def _shared_weights(self, mode: str) -> bool:
        """Whether syncs go through rank 0's /dev/shm buffer (every engine on its node) or the object store."""
        if mode == "object_store":
            return False
        home = self.learners.node_of_rank0()
        away = sum(n != home for n in ray.get([a.node_id.remote() for a in self.rollout_actors],
                                              timeout=self.rollout.deadline_s))
        if away and mode == "shared_memory":
            self.shutdown()
            raise MedpoError(f"rollout.weight_transport=shared_memory: {away} of {len(self.rollout_actors)} "
                             "rollout engine(s) run on another node than the learners' rank 0; use auto or "
                             "object_store")
        return not away

    def _started(self, what: str, refs: list, model_dir: str) -> None:
        """Wait for actors to be constructed; a failed constructor becomes one clear error, not a traceback, and
        one that never finishes (a hung model load) is named after STARTUP_S."""
        try:
            ray.get(refs, timeout=STARTUP_S)
        except GetTimeoutError:
            self._kill_stages()
            raise MedpoError(f"{what} did not start from {model_dir} within {STARTUP_S:.0f} s (hung model load?)"
                             ) from None
        except RayActorError as e:
            self._kill_stages()
            # Ray's message ends with the constructor's exception ("Type: message") after its traceback.
            cause = [line for line in str(e).splitlines() if line.strip()][-1].strip()
            raise MedpoError(f"{what} could not start from {model_dir}: {cause}") from None

    def bind(self, ledger: Ledger) -> None:
        """Make every stage report to `ledger` (the driver's, possibly restored from a checkpoint)."""
        for pool in (self.rollout, self.editor, self.corruption):
            pool.ledger = ledger

    def prepare_corruption(self, records_ref: ray.ObjectRef) -> None:
        """Start x~ for records whose rollout was just submitted (corruption.prefetch), fire and forget: a
        worker that died or got other records' pairs computes x~ in the corruption stage as before."""
        if self.prefetch:
            workers = self.corruption.actors
            # Not before the engines' weight loads: they are on the step's critical path, the prefetch is not.
            workers[self._prepared_calls % len(workers)].prepare.remote(records_ref, *self._loads)
            self._prepared_calls += 1

    def start_step(self, items: list, version: int) -> list[ray.ObjectRef]:
        """Submit one learner step whose weights then go to every engine as policy `version`, all at once:
        rank 0 exports right after its optimizer step and each engine loads the export as soon as it
        exists, with no round trip through this process in between. Returns the refs to wait on; then
        `finish_step`. Ray runs an actor's calls from one caller in submission order, so rollouts submitted
        after this run on the new weights without anyone waiting for them."""
        if self._loads:
            raise RuntimeError("Fleet.start_step: the previous weight sync was not finished (call finish_sync)")
        train = self.learners.start_train(items)
        if self.on_policy and not self.defer_sync:
            self._start_sync(version)
        return train

    def finish_step(self, refs: list[ray.ObjectRef], version: int) -> dict:
        """The metrics of the step `start_step` submitted. Bounded-async mode starts the step's weight sync
        only now: queued right behind the learner, as strict mode does, the loads would hold back every
        rollout submitted while it trains, which is exactly the work async mode exists to overlap. The loads
        finish in the background (finish_sync)."""
        metrics = self.learners.finish_train(refs)
        if self.on_policy and self.defer_sync:
            self._start_sync(version)
        return metrics

    def set_keep_rates(self, keep_rates: dict[str, float]) -> None:
        """New counterfactual keep rates for every span editor, ahead of any edit submitted after this."""
        self.keep_rates = keep_rates
        for e in self.editor.actors:
            e.set_keep_rates.remote(keep_rates)

    def _rebalance(self, actor) -> None:
        # A restarted editor starts from its constructor's keep rates: give it the current ones first.
        try:
            ray.get(actor.set_keep_rates.remote(self.keep_rates), timeout=self.editor.deadline_s)
        except (RayActorError, GetTimeoutError) as e:
            raise StageError("editor", f"restarted span editor lost while taking the keep rates: {e}") from e

    def probe_answers(self, records: list) -> tuple[dict[str, str], set[int]]:
        """Greedy answers of the rollout engines to `records` (the guard's held-out slice), split over the
        engines; queued behind any weight load already submitted, so they come from the newest weights.
        Returns (record id -> text, the policy versions that wrote them)."""
        spec = replace(self.spec, n=1, temperature=0.0)
        requests = [RolloutRequest(r.record_id, r.image, r.prompt) for r in records]
        k = len(self.rollout_actors)
        refs = [a.generate.remote(requests[i::k], spec) for i, a in enumerate(self.rollout_actors)]
        try:
            results = ray.get(refs, timeout=self.rollout.deadline_s)
        except GetTimeoutError:
            raise StageError("rollout", f"guard probe: no answers within {self.rollout.deadline_s:.0f} s") from None
        except (RayActorError, RayTaskError) as e:
            raise StageError("rollout", f"guard probe failed: {e}") from None
        texts = {ro.record_id: ro.text for res in results for ro in res.rollouts}
        return texts, {ro.policy_version for res in results for ro in res.rollouts}

    def sync_weights(self, version: int) -> dict:
        """Export the learner's current weights and load them into every engine as `version`; waits."""
        self.finish_sync()
        self._start_sync(version)
        return self.finish_sync()

    def _start_sync(self, version: int) -> None:
        # The engines get the weights' ref before the export finishes: Ray starts each load as soon as
        # the buffer (or its shared-memory descriptor) exists.
        full = not (self.partial_sync and self.weights_ref is not None)  # an engine's first push is full
        self.weights_ref, self._export = self.learners.start_export(shared=self.shared_weights, full=full)
        self._loads = [a.sync_from.remote(self.weights_ref, version) for a in self.rollout_actors]
        self.version = version
        self._last_partial = not full

    def finish_sync(self) -> dict | None:
        """Wait until every engine serves the last exported weights (before rank 0 rewrites its buffer);
        None if no sync is pending. Figures: rank 0's export summary, the last engine's load, `sync_s`, the
        span from the learner's optimizer step to the last engine loaded, and `parts_s` of that span."""
        if not self._loads:
            return None
        loads, self._loads = self._loads, []
        summary = self.learners.finish_export(self._export)  # a failed export raises LearnerFailed here
        self.weight_transport = summary["transport"]
        stats = []
        deadline = time.monotonic() + self.rollout.deadline_s  # one deadline for the whole sync
        for i, (actor, ref) in enumerate(zip(self.rollout_actors, loads, strict=True)):
            try:
                stats.append(self._load_result(ref, deadline, i))
            except RayActorError:  # died during the push: Ray restarts it, and it loads the weights again
                try:
                    stats.append(self._load_result(self._load_current(actor), deadline, i))
                except RayActorError as e:
                    raise StageError("rollout", f"engine lost during weight sync to version {self.version}: {e}") from e
            except RayTaskError as e:
                raise StageError("rollout", str(e.cause if e.cause is not None else e)) from None
        last = max(stats, key=lambda s: s["t_end"])
        return {**summary, **last, "version": self.version, "sync_s": last["t_end"] - summary["t_from"],
                # where the span went: queued behind the step, exporting, reaching the last engine, loading
                "parts_s": {"to_export": summary["t_export"] - summary["t_from"], "export": summary["export_s"],
                            "to_engine": last["t_start"] - summary["t_export"] - summary["export_s"],
                            "engine": last["t_end"] - last["t_start"]}}

    def _load_result(self, ref, deadline: float, engine: int) -> dict:
        """An engine's weight load, or StageError naming the engine once the rollout deadline has passed."""
        try:
            return ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
        except GetTimeoutError:
            raise StageError("rollout", f"engine {engine} did not load policy version {self.version} within "
                             f"{self.rollout.deadline_s:.0f} s (train.stage_deadlines.rollout): the weight load "
                             "is hung") from None

    def _resync(self, actor) -> None:
        # A restarted engine serves its initial weights: give it the current ones before new work.
        if self.weights_ref is not None:
            try:
                self._load_result(self._load_current(actor), time.monotonic() + self.rollout.deadline_s,
                                  self.rollout.actors.index(actor))
            except RayActorError as e:
                raise StageError("rollout", f"restarted engine lost while loading version {self.version}: {e}") from e

    def _load_current(self, actor) -> ray.ObjectRef:
        """A restarted engine's load of the current weights: the last push, or, when that was partial (the
        engine lost the full push it builds on), a full export made for it through the object store. Its
        version is the learner's step at that export (in bounded-async mode possibly the step in flight:
        the engine is then one version ahead, and the regular sync of that version finds it served)."""
        if not self._last_partial:
            return actor.sync_from.remote(self.weights_ref, self.version)
        ref, summaries = self.learners.start_export(shared=False, full=True)
        summary = self.learners.finish_export(summaries)
        return actor.sync_from.remote(ref, max(summary["step"], self.version))

    def shutdown(self) -> None:
        """Stop the learner group (its placement group) and every stage actor."""
        self.learners.shutdown()
        self._kill_stages()

    def _kill_stages(self) -> None:
        for pool in (self.rollout, self.editor, self.corruption):
            for a in pool.actors:
                ray.kill(a)
