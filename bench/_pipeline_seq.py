"""The on-policy loop of driver/loop.py as one plain Python process, without Ray: the baseline
that bench/pipeline.py compares the Ray driver with.

Same library pieces as the actors (RolloutEngine, critic + PairBuilder with the training tokenizer,
corrupt_records -> PreferencePair with x~, one DeepSpeed Learner of world size 1, ObjectStoreSync into the engine),
same data order (DataCursor), same exact-size steps with top-ups for rejected pairs, same key order for
training. Run as a script: `python bench/_pipeline_seq.py CONFIG.json MODEL_DIR`; the last printed line
is one JSON object with per-step timings.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the rollout actor runs its engine
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))



def log(msg: str) -> None:
    """A timestamped progress line."""
    print(f"[bench/pipeline seq {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class SequentialLoop:
    """Rollout -> edit -> corrupt -> train -> sync, one stage after the other in this process."""

    def __init__(self, cfg, model_dir: str, records: dict):
        from transformers import AutoTokenizer

        from medpo_ray.critics import make_critic, reference_keep_rates
        from medpo_ray.cursor import DataCursor
        from medpo_ray.editing.pairs import PairBuilder
        from medpo_ray.rollout.engine import RolloutEngine, SamplingSpec
        from medpo_ray.training.dist import DistEnv, free_port
        from medpo_ray.training.learner import Learner

        self.cfg, self.records, self.n = cfg, records, cfg.train.batch_size
        t0 = time.perf_counter()
        self.engine = RolloutEngine(model_dir, dtype=cfg.model.dtype, max_model_len=cfg.model.max_model_len,
                                    kv_cache_gib=cfg.rollout.kv_cache_gib, seed=cfg.rollout.seed,
                                    enable_prefix_caching=cfg.rollout.prefix_caching)
        self.spec = SamplingSpec.from_config(cfg.rollout)
        # The driver's balanced counterfactuals (its prior; the driver refits them on-policy per step).
        self.critic = make_critic(cfg.critic, reference_keep_rates(cfg.critic, records.values()))
        self.builder = PairBuilder(None, AutoTokenizer.from_pretrained(model_dir))
        env = DistEnv(0, 1, "127.0.0.1", free_port(), backend="gloo")
        # The in-process vLLM engine has already joined a one-rank torch.distributed group, so the
        # learner's init_distributed returns early without exporting what DeepSpeed reads: do it here.
        os.environ.update(MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port), RANK="0",
                          WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1", LOCAL_WORLD_SIZE="1")
        self.learner = Learner(model_dir, cfg.train, cfg.loss, env, seed=cfg.run.seed,
                               max_length=cfg.model.max_model_len)
        self.frozen = self.learner.frozen_export_names()  # as the Ray learner marks them
        self.cursor = DataCursor(list(records), seed=cfg.run.seed)
        self.startup_s = time.perf_counter() - t0
        self.version = 0

    def _examples(self, keys: list[str], secs: dict) -> tuple[dict, int]:
        """The pairs (with x~) the prompts `keys` become (by key), and how many were dropped."""
        from medpo_ray.corruption import corrupt_records
        from medpo_ray.cursor import DataCursor
        from medpo_ray.rollout.engine import RolloutRequest

        samples = {k: replace(self.records[DataCursor.record_id(k)], record_id=k) for k in keys}
        t = time.perf_counter()
        result = self.engine.generate([RolloutRequest(k, r.image, r.prompt) for k, r in samples.items()], self.spec)
        secs["rollout"] += time.perf_counter() - t
        t = time.perf_counter()
        done = [ro for ro in result.rollouts if ro.record_id in samples]
        recs = [samples[ro.record_id] for ro in done]
        verdicts = self.critic.review_many(list(zip(recs, [ro.text for ro in done], strict=True)))
        batch = self.builder.build_batch(recs, [ro.text for ro in done], verdicts, [ro.policy_version for ro in done])
        secs["editor"] += time.perf_counter() - t
        t = time.perf_counter()
        made, _bad = corrupt_records([samples[p.record_id] for p in batch.pairs], self.cfg.corruption)
        x_tilde = {c.record_id: c.image for c in made}
        pairs = [p.with_images(samples[p.record_id].image, x_tilde[p.record_id]) for p in batch.pairs if p.record_id in x_tilde]
        refused = self.learner.collator.check(pairs)  # as the Ray corruption stage checks them
        out = {p.record_id: p for p in pairs if p.record_id not in refused}
        secs["corruption"] += time.perf_counter() - t
        return out, len(keys) - len(out)

    def step(self) -> dict:
        """One training step on exactly batch_size examples, then the weight push; its timings."""
        from medpo_ray.errors import MedpoError
        from medpo_ray.rollout.weight_sync.object_store import ObjectStoreSync

        t0 = time.perf_counter()
        secs = {"rollout": 0.0, "editor": 0.0, "corruption": 0.0}
        examples: dict = {}
        issued = dropped = 0
        while len(examples) < self.n:
            need = self.n - len(examples)
            if issued + need > self.cfg.train.max_prompts_per_pair * self.n:
                raise MedpoError(f"sequential step {self.version}: {issued} prompts gave {len(examples)} pairs")
            made, lost = self._examples(self.cursor.take(need), secs)
            examples.update(made)
            issued, dropped = issued + need, dropped + lost
        ids = sorted(examples)
        t = time.perf_counter()
        metrics = self.learner.train_step([examples[k] for k in ids])
        secs["learner"] = time.perf_counter() - t
        t = time.perf_counter()
        self.version += 1
        sync = ObjectStoreSync(self.engine, "flat")
        sync.sync(self.learner.export_weights().items(), self.version, frozen=self.frozen)
        secs["weight_sync"] = time.perf_counter() - t
        return {"step": self.version, "pairs": len(metrics["trained_ids"]), "issued": issued, "dropped": dropped,
                "keys": list(metrics["trained_ids"]), "seconds": time.perf_counter() - t0, "stage_s": secs,
                "end": time.perf_counter()}


def main(argv: list[str]) -> int:
    """Run the loop for train.steps steps; print the per-step timings as the last line."""
    from medpo_ray.config import Config
    from medpo_ray.data.splits import load_split

    cfg = Config.model_validate(json.loads(Path(argv[0]).read_text()))
    good, _bad = load_split(cfg, Path(cfg.data.path), "train")
    records = {r.record_id: r for r in good}
    shm_before = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    try:
        return _run(cfg, argv[1], records)
    finally:
        # DeepSpeed's CPU all-reduce leaves a ~69 MB /dev/shm file per process (LearnerGroup removes its
        # own); this loop is the only DeepSpeed user while it runs, so the new files are its.
        for f in set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) - shm_before:
            f.unlink(missing_ok=True)


def _run(cfg, model_dir: str, records: dict) -> int:
    loop = SequentialLoop(cfg, model_dir, records)
    import torch

    log(f"engine + learner up in {loop.startup_s:.1f} s (torch threads {torch.get_num_threads()})")
    steps = []
    for _ in range(cfg.train.steps):
        steps.append(loop.step())
        s = steps[-1]
        log(f"step {s['step']}/{cfg.train.steps}: {s['pairs']} pairs in {s['seconds']:.2f} s "
            f"({s['dropped']} dropped) " + " ".join(f"{k}={v:.2f}" for k, v in s["stage_s"].items()))
    print(json.dumps({"startup_s": loop.startup_s, "torch_threads": torch.get_num_threads(), "steps": steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
