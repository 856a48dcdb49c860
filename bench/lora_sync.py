"""LoRA weight sync: what a push after a LoRA step carries against a push of every tensor, on one engine.

usage: python bench/lora_sync.py [--preset small] [--repeats 3]
A `small` policy, an in-process vLLM engine and a one-rank DeepSpeed learner with the paper's LoRA (r 128,
alpha 256, dropout 0.05 on the language model's projections; vision tower frozen), adapters set to random
values so that the merged weights differ from the base. The first push carries every tensor (an engine
needs one); then pushes alternate between every tensor (`full_sync_*`) and the partial push the fleet
makes after a LoRA step (`lora_sync_*`: the layers the adapters touch, nothing training never changes),
timed from the export to the engine serving them; medians over --repeats. After the last LoRA push the
engine's log-probs are checked against the learner's merged policy on greedy rollouts.
The last printed line is one JSON object (keys: lora_sync_bytes, full_sync_bytes, lora_sync_s,
full_sync_s, bytes_ratio, lora_tensors, full_tensors, logprob_max_abs_diff_after_lora_sync, adapter_bytes).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def log(msg: str) -> None:
    print(f"[bench/lora_sync {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _png(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    a = (np.random.default_rng(seed).random((112, 112, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from medpo_ray.config import Config
    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset
    from medpo_ray.rollout.engine import RolloutEngine, RolloutRequest, SamplingSpec
    from medpo_ray.rollout.weight_sync.base import WeightPush
    from medpo_ray.rollout.weight_sync.flat import pack_flat
    from medpo_ray.training.dist import DistEnv, free_port
    from medpo_ray.training.learner import Learner

    work = tempfile.mkdtemp(prefix="medpo-lora-sync-")
    model_dir = os.path.join(work, "policy")
    info = build_model(model_dir, get_preset(args.preset), grammar_texts(studies=300))
    log(f"{args.preset} policy: {info['parameters'] / 1e6:.1f}M parameters")
    cfg = Config.model_validate({"train": {"finetune": "lora", "lora_r": 128, "lora_alpha": 256,
                                           "lora_dropout": 0.05, "num_learners": 1, "batch_size": 4,
                                           "micro_batch": 4, "zero_stage": 1}, "model": {"max_model_len": 256}})
    engine = RolloutEngine(model_dir, max_model_len=256)
    env = DistEnv(0, 1, "127.0.0.1", free_port(), backend="gloo")
    # The in-process vLLM engine already joined a one-rank torch.distributed group (see bench/_pipeline_seq.py).
    os.environ.update(MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_SIZE="1", LOCAL_WORLD_SIZE="1")
    learner = Learner(model_dir, cfg.train, cfg.loss, env, seed=0, max_length=256)
    frozen = learner.frozen_export_names()
    gen = torch.Generator().manual_seed(0)

    def perturb() -> None:  # a LoRA step's worth of change: new adapter values
        with torch.no_grad():
            for name, p in learner.engine.module.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.02)

    version = 0

    def push(full: bool) -> tuple[int, int, float]:
        nonlocal version
        perturb()
        t0 = time.perf_counter()
        omitted = frozenset() if full else frozen
        bucket = pack_flat(learner.export_weights(skip=omitted).items(), frozen=frozen, omitted=omitted)
        version += 1
        engine.apply_push(WeightPush(version, "flat", (bucket,)))
        return int(bucket.data.nbytes), len(bucket.header), time.perf_counter() - t0

    push(True)  # the engine's first push: every tensor
    full, lora = [], []
    for _ in range(args.repeats):
        full.append(push(True))
        lora.append(push(False))
    requests = [RolloutRequest(f"r{i}", _png(i), "Is there a nodule in the left lung?") for i in range(4)]
    result = engine.generate(requests, SamplingSpec(max_tokens=16))
    gap = learner.logprob_gap(result.rollouts, {r.record_id: r.image for r in requests},
                              {r.record_id: r.prompt for r in requests})
    out = {"preset": args.preset, "parameters": info["parameters"],
           "full_sync_bytes": full[0][0], "lora_sync_bytes": lora[0][0],
           "full_tensors": full[0][1], "lora_tensors": lora[0][1],
           "bytes_ratio": round(lora[0][0] / full[0][0], 4),
           "full_sync_s": round(statistics.median(s for _, _, s in full), 4),
           "lora_sync_s": round(statistics.median(s for _, _, s in lora), 4),
           "logprob_max_abs_diff_after_lora_sync": gap["logprob_max_abs_diff"], "logprob_tokens": gap["tokens"],
           # What an adapter-only sync (vLLM's LoRA support) would carry instead: the A and B matrices.
           "adapter_bytes": sum(p.numel() * p.element_size() for n, p in learner.engine.module.named_parameters()
                                if "lora_" in n)}
    log(f"full push {out['full_sync_bytes'] / 1e6:.1f} MB in {out['full_sync_s']:.3f} s; LoRA push "
        f"{out['lora_sync_bytes'] / 1e6:.1f} MB in {out['lora_sync_s']:.3f} s; log-prob gap after it "
        f"{out['logprob_max_abs_diff_after_lora_sync']:.2e} over {gap['tokens']} tokens")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
