"""The learner group on Ray: N DeepSpeed ranks in one placement group, driven step by step.

`LearnerRank` is a thin actor over `medpo_ray.training.Learner`. `LearnerGroup` places the ranks
(one bundle each: {"CPU": cpus_per_rank} on CPU machines, plus {"GPU": gpus_per_rank} on GPU clusters,
strategy from the config), wires their process group (rank 0's node address and a free port there),
shards each global batch across them, and turns any rank's death or error into `LearnerFailed` after
stopping the whole group: its other ranks would otherwise wait in a collective forever.
"""
from __future__ import annotations

import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from medpo_ray.config import LossConfig, TrainConfig
from medpo_ray.errors import MedpoError
from medpo_ray.rollout.weight_sync.flat import FlatBucket, pack_flat
from medpo_ray.rollout.weight_sync.shared_buffer import PREFIX, SharedWeights, SharedWeightsWriter, shm_room
from medpo_ray.training.dist import DistEnv, free_port
from medpo_ray.training.errors import LearnerFailed, TrainBatchError
from medpo_ray.training.reduce import reduce_metrics


class LearnerRank:
    """One data-parallel rank: builds its `Learner` in `setup` and forwards every call to it."""

    def __init__(self, rank: int):
        self.rank = rank
        self.learner = None
        self._frozen = None  # names the export marks frozen, computed on the first export
        self._shared: SharedWeightsWriter | None = None  # rank 0's shared-memory weight buffer, if used
        self._trained_at: float | None = None  # epoch time the last optimizer step ended (weight-sync span)

    def node(self) -> dict:
        """This actor's node id and address, for rank placement and the rendezvous address."""
        return {"node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address()}

    def free_port(self, host: str) -> int:
        """A free TCP port on this node (asked of rank 0, which hosts the rendezvous)."""
        return free_port(host)

    def setup(self, model_dir: str, train: TrainConfig, loss: LossConfig, env: DistEnv, seed: int,
              max_length: int | None) -> dict:
        """Join the process group and build the DeepSpeed engine (a collective over all ranks)."""
        from medpo_ray.training.learner import Learner

        t0 = time.perf_counter()
        self.learner = Learner(model_dir, train, loss, env, seed=seed, max_length=max_length)
        trainable = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel()
                        for p in self.learner.engine.module.parameters() if p.requires_grad)
        return {"rank": self.rank, "trainable_parameters": trainable, "seconds": time.perf_counter() - t0}

    def _resolve(self, items: list) -> list:
        """Items are PreferencePairs, ObjectRefs of one, or (ObjectRef of a list, index) pairs; the last
        form lets a stage put a whole chunk of examples once and the driver route single examples."""
        refs = list(dict.fromkeys(x[0] if isinstance(x, tuple) else x for x in items
                                  if isinstance(x[0] if isinstance(x, tuple) else x, ray.ObjectRef)))
        values = dict(zip(refs, ray.get(refs), strict=True)) if refs else {}
        out = []
        for x in items:
            if isinstance(x, tuple):
                out.append(values[x[0]][x[1]])
            else:
                out.append(values[x] if isinstance(x, ray.ObjectRef) else x)
        return out

    def train_step(self, items: list) -> dict:
        """Learner.train_step on this rank's share (PreferencePairs or ObjectRefs of them)."""
        t_start = time.time()
        try:
            return {**self.learner.train_step(self._resolve(items)), "t_start": t_start, "t_end": time.time()}
        finally:
            self._trained_at = time.time()

    def score(self, items: list) -> dict:
        """Learner.score on this rank's share."""
        return self.learner.score(self._resolve(items))

    def gold_logprobs(self, records: list) -> list:
        """Learner.gold_logprobs (the guard's probe set)."""
        return self.learner.gold_logprobs(records)

    def logprob_gap(self, result, records: list, version: int, max_rows: int) -> dict | None:
        """Learner.logprob_gap on up to `max_rows` rollouts of a rollout stage's GenerateResult that the
        policy `version` wrote (None if it holds none: an older version's rollouts would differ anyway)."""
        rollouts = [r for r in result.rollouts if r.policy_version == version and r.token_ids][:max_rows]
        if not rollouts:
            return None
        wanted = {r.record_id for r in rollouts}
        images = {r.record_id: r.image for r in records if r.record_id in wanted}
        prompts = {r.record_id: r.prompt for r in records if r.record_id in wanted}
        return self.learner.logprob_gap(rollouts, images, prompts)

    def export_weights(self, shared_tag: str | None = None, full: bool = True) -> tuple[dict, FlatBucket | SharedWeights]:
        """(summary, weights): packed in one flat buffer that engines read zero-copy from the object store,
        or, given `shared_tag` (engines on this node), written into this rank's /dev/shm buffer and
        described by a small SharedWeights; the object store is the fallback when /dev/shm has no room.
        The summary is small, so the group can check for errors without fetching the weights; its `t_from`
        is when the weights became current (the last optimizer step's end, else this export's start)."""
        t0 = time.time()
        t_from, self._trained_at = self._trained_at or t0, None
        if self._frozen is None:
            self._frozen = self.learner.frozen_export_names()
        # A partial push (`full=False`) leaves out what training never changes (LoRA: all but the layers the
        # adapters touch): engines that loaded a full push already hold those values, so they are not even
        # gathered.
        omitted = frozenset() if full else self._frozen
        tensors = self.learner.export_weights(skip=omitted)
        summary = {"tensors": len(tensors), "bytes": sum(t.numel() * t.element_size() for t in tensors.values()),
                   "step": self.learner.step, "transport": "object_store", "t_from": t_from,
                   "t_export": t0, "omitted": len(omitted)}
        if shared_tag is not None and tensors:
            if self._shared is None and shm_room(summary["bytes"]):  # (+ alignment: shm_room keeps 16 MB spare)
                self._shared = SharedWeightsWriter(tag=shared_tag)
            if self._shared is not None:
                weights = self._shared.write(tensors.items(), self._frozen, omitted)
                return {**summary, "transport": "shared_memory", "export_s": time.time() - t0}, weights
        weights = pack_flat(tensors.items(), frozen=self._frozen, omitted=omitted)
        return {**summary, "export_s": time.time() - t0}, weights

    def close_shared_weights(self) -> None:
        """Delete the shared-memory weight buffer (engines keep their mappings until they drop them)."""
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    def state_dict(self) -> dict:
        """Learner.state_dict (this rank's view of every policy tensor)."""
        return self.learner.state_dict()

    def save_checkpoint(self, path: str) -> None:
        """Learner.save_checkpoint."""
        self.learner.save_checkpoint(path)

    def load_checkpoint(self, path: str) -> dict:
        """Learner.load_checkpoint."""
        return self.learner.load_checkpoint(path)


class LearnerGroup:
    """N learner ranks training one policy with data parallelism; every method is a group-wide step."""

    def __init__(self, model_dir: str | Path, train: TrainConfig, loss: LossConfig, *, seed: int = 0,
                 max_length: int | None = None, setup_timeout_s: float = 600.0):
        self.train, self.n = train, train.num_learners
        self.shared_tag = uuid.uuid4().hex[:12]  # names rank 0's /dev/shm weight buffer
        self.timeout_s = train.deadline_s("learner")
        bundle = {"CPU": train.cpus_per_rank} | ({"GPU": train.gpus_per_rank} if train.gpus_per_rank else {})
        self.pg = placement_group([bundle] * self.n, strategy=train.placement_strategy)
        try:
            ray.get(self.pg.ready(), timeout=setup_timeout_s)
        except GetTimeoutError:
            remove_placement_group(self.pg)
            raise MedpoError(f"learner group: {self.n} bundle(s) of {bundle} ({train.placement_strategy}) could "
                             f"not be placed in {setup_timeout_s:.0f} s; cluster resources: "
                             f"{ray.cluster_resources()}") from None
        gpu = train.gpus_per_rank > 0
        env_vars = {"DS_ACCELERATOR": "cuda" if gpu else "cpu", "TOKENIZERS_PARALLELISM": "false"}
        actor = ray.remote(LearnerRank)
        self.ranks = [
            actor.options(num_cpus=train.cpus_per_rank, num_gpus=train.gpus_per_rank, max_restarts=0,
                          runtime_env={"env_vars": env_vars},
                          scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=i))
            .remote(i) for i in range(self.n)]
        nodes = self._all("node", timeout_s=setup_timeout_s)
        master = nodes[0]["ip"]
        port = self._one(0, "free_port", master, timeout_s=setup_timeout_s)
        self._shm_glob = f"deepspeed_allreduce_buffer_*_{master}_{port}_*"
        backend = train.dist_backend if train.dist_backend != "auto" else ("nccl" if gpu else "gloo")
        local = self._local_ranks([n["node_id"] for n in nodes], gpu)
        # One node on loopback: rendezvous through a file, so that no learner listens beyond 127.0.0.1.
        one_node = len({n["node_id"] for n in nodes}) == 1 and master.startswith("127.")
        self._rendezvous = Path(tempfile.gettempdir()) / f"medpo-rdzv-{uuid.uuid4().hex}" if one_node else None
        init = f"file://{self._rendezvous}" if self._rendezvous else None
        envs = [DistEnv(i, self.n, master, port, local[i][0], local[i][1], backend, init) for i in range(self.n)]
        self.setup_info = self._each("setup", [(str(model_dir), train, loss, e, seed, max_length) for e in envs],
                                timeout_s=setup_timeout_s)

    @staticmethod
    def _local_ranks(node_ids: list[str], gpu: bool) -> list[tuple[int, int]]:
        # Ray gives each GPU actor its own CUDA_VISIBLE_DEVICES, so on GPUs every rank is device 0 of 1.
        if gpu:
            return [(0, 1)] * len(node_ids)
        seen: dict[str, int] = defaultdict(int)
        local = []
        for node in node_ids:
            local.append(seen[node])
            seen[node] += 1
        return [(lr, seen[node]) for lr, node in zip(local, node_ids, strict=True)]

    def _wait(self, refs: list, timeout_s: float | None = None) -> list:
        """Results in rank order; the first rank to fail stops the group and raises LearnerFailed."""
        timeout_s = timeout_s or self.timeout_s
        pending = {ref: rank for rank, ref in enumerate(refs)}
        out: dict[int, object] = {}
        deadline = time.monotonic() + timeout_s
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                rank = min(pending.values())
                self.shutdown()
                raise LearnerFailed(rank, f"no answer within {timeout_s:.0f} s (hung or too slow)")
            rank = pending.pop(ready[0])
            try:
                out[rank] = ray.get(ready[0])
            except (RayActorError, RayTaskError) as e:
                self.shutdown()
                cause = e.cause if isinstance(e, RayTaskError) and e.cause is not None else e
                raise LearnerFailed(rank, f"{type(cause).__name__}: {cause}") from None
        return [out[r] for r in range(len(refs))]

    def _all(self, method: str, *args, timeout_s: float | None = None) -> list:
        return self._wait([getattr(r, method).remote(*args) for r in self.ranks], timeout_s)

    def _each(self, method: str, args: list[tuple], timeout_s: float | None = None) -> list:
        return self._wait([getattr(r, method).remote(*a) for r, a in zip(self.ranks, args, strict=True)], timeout_s)

    def _one(self, rank: int, method: str, *args, timeout_s: float | None = None):
        ref = getattr(self.ranks[rank], method).remote(*args)
        return self._wait([ref], timeout_s)[0]

    def _shards(self, items: Sequence) -> list[tuple[list]]:
        per = len(items) // self.n
        return [(list(items[i * per:(i + 1) * per]),) for i in range(self.n)]

    def train_step(self, items: Sequence) -> dict:
        """One optimizer step on a global batch of `train.batch_size` PreferencePairs (or ObjectRefs of them).

        Rank i trains on the i-th contiguous 1/N of the batch; returns the step's metrics (see
        reduce_metrics) with `trained_ids` for the ledger and `bad` for the examples left out.
        """
        return self.finish_train(self.start_train(items))

    def start_train(self, items: Sequence) -> list[ray.ObjectRef]:
        """Submit `train_step` without waiting: calls queued on the ranks after it (an export) run right
        after the optimizer step, with no round trip through the caller."""
        if len(items) != self.train.batch_size:
            raise TrainBatchError(f"learner group: got {len(items)} examples, train.batch_size is "
                                  f"{self.train.batch_size}")
        return [r.train_step.remote(*a) for r, a in zip(self.ranks, self._shards(items), strict=True)]

    def finish_train(self, refs: list[ray.ObjectRef]) -> dict:
        """The metrics of a step `start_train` submitted (a rank that failed stops the group: LearnerFailed)."""
        return reduce_metrics(self._wait(refs))

    def score(self, items: Sequence) -> dict:
        """Sequence log-probs of y+ / y- for policy and reference (len(items) must divide by N)."""
        if len(items) % self.n:
            raise TrainBatchError(f"learner group: {len(items)} examples do not split over {self.n} ranks")
        parts = self._each("score", self._shards(items))
        return {k: [x for p in parts for x in p[k]] for k in ("ids", "policy", "reference", "bad")}

    def logprob_gap(self, rollout_ref: ray.ObjectRef, records_ref: ray.ObjectRef, version: int,
                    max_rows: int = 4) -> dict | None:
        """vLLM-vs-learner log-prob gap on rollouts (a rollout stage's payload) that policy `version` wrote;
        every rank scores the same rows (a collective under ZeRO-3); rank 0's figures."""
        return self._all("logprob_gap", rollout_ref, records_ref, version, max_rows)[0]

    def gold_logprobs(self, records_ref: ray.ObjectRef) -> list:
        """Token log-probs of the records' gold answers under the current policy; every rank scores the same
        records (a collective under ZeRO-3); rank 0's answer."""
        return self._all("gold_logprobs", records_ref)[0]

    def start_export(self, shared: bool = False, full: bool = True) -> tuple[ray.ObjectRef, list]:
        """Every rank exports (a collective under ZeRO-3); returns (ObjectRef of rank 0's weights under HF
        names: a FlatBucket, or with `shared` a SharedWeights descriptor of its /dev/shm buffer; the ranks'
        summary refs for `finish_export`) without waiting, so a caller can hand the weights ref on to the
        engines before it is ready."""
        tag = self.shared_tag if shared else None
        pairs = [r.export_weights.options(num_returns=2).remote(tag if i == 0 else None, full)
                 for i, r in enumerate(self.ranks)]
        return pairs[0][1], [s for s, _ in pairs]

    def node_of_rank0(self) -> str:
        """Ray node id of rank 0 (where a shared-memory weight buffer lives)."""
        return self._one(0, "node")["node_id"]

    def finish_export(self, summary_refs: list) -> dict:
        """Wait for the export (a rank that failed stops the group: LearnerFailed); rank 0's summary."""
        return self._wait(summary_refs)[0]

    def export_weights(self) -> tuple[ray.ObjectRef, dict]:
        """(ObjectRef of rank 0's weights as a FlatBucket, summary), once every rank has exported."""
        ref, summaries = self.start_export()
        return ref, self.finish_export(summaries)

    def state_dicts(self) -> list[dict]:
        """Every rank's view of every policy tensor, in rank order (for checks; fetches them all)."""
        return self._all("state_dict")

    def save_checkpoint(self, path: str | Path) -> None:
        """Every rank writes its part of the checkpoint at `path` (storage all ranks can reach)."""
        self._all("save_checkpoint", str(path))

    def load_checkpoint(self, path: str | Path) -> dict:
        """Every rank restores its part; returns the checkpoint's metadata (step, settings)."""
        return self._all("load_checkpoint", str(path))[0]

    def shutdown(self) -> None:
        """Stop every rank and free the placement group (safe to call twice)."""
        if self.ranks:
            try:  # rank 0 deletes its shared-memory weight buffer, wherever it runs
                ray.get(self.ranks[0].close_shared_weights.remote(), timeout=10)
            except Exception:  # a dead or hung rank: the glob below still cleans this node
                pass
        for r in self.ranks:
            ray.kill(r, no_restart=True)
        self.ranks = []
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
        # DeepSpeed's CPU shm all-reduce leaves one ~69 MB /dev/shm file per rank and never deletes it;
        # they pile up over runs (13.8 GB seen). Remove this group's files on this node.
        for f in Path("/dev/shm").glob(getattr(self, "_shm_glob", "") or "-"):
            f.unlink(missing_ok=True)
        if getattr(self, "_rendezvous", None) is not None:
            self._rendezvous.unlink(missing_ok=True)
        Path("/dev/shm", f"{PREFIX}{self.shared_tag}.bin").unlink(missing_ok=True)
