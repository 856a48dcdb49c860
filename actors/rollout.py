"""RolloutActor: one vLLM engine (medpo_ray.rollout.engine) in a Ray actor, and the client a learner
uses to sync weights into a group of them."""
from __future__ import annotations

import os
import sys
import time

import ray

from actors import metrics
from medpo_ray.rollout.engine import GenerateResult, RolloutEngine, RolloutRequest, SamplingSpec
from medpo_ray.rollout.weight_sync.base import WeightManifest, WeightPush, WeightSyncError
from medpo_ray.rollout.weight_sync.flat import FlatBucket
from medpo_ray.rollout.weight_sync.shared_buffer import SharedWeights, SharedWeightsReader
from medpo_ray.streaming.outcome import StageOutcome

# OpenMP workers that spin while waiting slow down ~10x when the learners or other actors want the same
# cores (measured on 2 shared cores); sleeping waiters keep rollout steady. Read at process start.
_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


@ray.remote(runtime_env={"env_vars": _ENV})
class RolloutActor:
    """Remote face of `RolloutEngine`; a push arrives resolved from the object store."""

    def __init__(self, model_dir: str, **engine_kwargs):
        self.engine = RolloutEngine(model_dir, **engine_kwargs)
        self._shared = SharedWeightsReader()
        self._load_error: str | None = None  # a failed weight load: this engine must not answer any more

    def generate(self, requests: list[RolloutRequest], spec: SamplingSpec = SamplingSpec()) -> GenerateResult:
        """Decode requests (see RolloutEngine.generate)."""
        return self.engine.generate(requests, spec)

    def rollout(self, records: list, spec: SamplingSpec = SamplingSpec()) -> tuple[StageOutcome, GenerateResult]:
        """The pipeline's rollout stage: decode each record's (image, prompt). Kept: the records answered,
        with this engine's policy version; dropped: records whose image or prompt it cannot take."""
        if self._load_error:  # the driver queues rollouts behind a load without waiting for it
            raise WeightSyncError(self._load_error)
        result = self.engine.generate([RolloutRequest(r.record_id, r.image, r.prompt) for r in records], spec)
        tokens = result.completion_tokens
        metrics.inc("medpo_rollout_tokens_total", tokens)
        if result.seconds > 0:
            metrics.set("medpo_rollout_tokens_per_second", tokens / result.seconds)
        metrics.set("medpo_policy_version", self.engine.policy_version, role="rollout")
        for b in result.bad:
            metrics.inc("medpo_bad_records_total", reason=f"rollout:{b.field}")
        answered = tuple(dict.fromkeys(ro.record_id for ro in result.rollouts))
        version = self.engine.policy_version
        outcome = StageOutcome("rollout", answered, {b.record_id: f"{b.field}: {b.reason}" for b in result.bad},
                               versions=dict.fromkeys(answered, version), seconds=result.seconds,
                               finished=time.time())
        return outcome, result

    def sync_from(self, weights: FlatBucket | SharedWeights, version: int) -> dict:
        """Load the learner's exported weights as `version`: a zero-copy view of the object store, or of
        rank 0's shared-memory buffer on this node (checked not to have been rewritten while loading).
        A load that fails leaves the engine refusing rollouts, naming the failure (it may hold a mix)."""
        t0, t_start = time.perf_counter(), time.time()
        if version == self.engine.policy_version and not self._load_error:
            # Already served: a restarted engine that the stage pool re-synced before the fleet retried.
            return {"policy_version": version, "apply_s": 0.0, "sync_s": 0.0, "t_start": t_start,
                    "t_end": time.time(), "already": True}
        try:
            bucket = self._shared.open(weights) if isinstance(weights, SharedWeights) else weights
            stats = self.engine.apply_push(WeightPush(version, "flat", (bucket,)))
        except Exception as e:
            self._load_error = f"rollout engine failed to load policy version {version}: {type(e).__name__}: {e}"
            raise
        if isinstance(weights, SharedWeights):
            try:
                self._shared.check(weights)
            except WeightSyncError as e:  # it may now serve a mix of two versions: never let it answer
                print(f"rollout engine: {e}; exiting so that Ray restarts it clean", file=sys.stderr, flush=True)
                os._exit(1)
        self._load_error = None
        return {**stats, "buckets": 1, "bytes": int(bucket.data.nbytes), "sync_s": time.perf_counter() - t0,
                "t_start": t_start, "t_end": time.time()}

    def node_id(self) -> str:
        """Ray node id of this actor (shared-memory weight sync needs the learner's rank 0 here)."""
        return ray.get_runtime_context().get_node_id()

    def policy_version(self) -> int:
        """Version of the weights now serving."""
        return self.engine.policy_version

    def weight_manifest(self) -> WeightManifest:
        """Names and shapes a push must carry."""
        return self.engine.weight_manifest()

    def apply_push(self, push: WeightPush) -> dict:
        """Load a CPU weight push (see RolloutEngine.apply_push)."""
        return self.engine.apply_push(push)
