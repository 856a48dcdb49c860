"""Rollout benchmark: vLLM engine vs transformers `generate` on the same model, prompts and lengths;
weight-sync time and its share of a step; vLLM-vs-transformers log-prob gap after a sync.

usage: python bench/rollout.py [--preset small] [--seqs 16] [--tokens 64] [--dtype float32|bfloat16] [--eager]
The last printed line is one JSON object (keys: vllm_tokens_per_s, hf_tokens_per_s, vllm_vs_hf_ratio,
rollout_mfu, weight_sync_s, logprob_max_abs_diff, ...). Timings are wall clock on whatever else the
machine is doing: compare runs taken under the same load.

vllm/hf tokens/s: end to end (prefill included, cold caches) at --seqs x --tokens, best of a few runs.
rollout_mfu: model FLOP/s of the decode phase (2 x decode parameters x decode tokens/s) over the dense
matmul peak measured here (the higher of a measure before the runs and one right after the
decode phase), at --mfu-seqs x --tokens; the decode phase is the full run minus a run that
only prefills and samples the first token. The end-to-end figures at --seqs (prefill time counted, its
FLOPs not) are in the JSON too (vllm_mfu_end_to_end, hf_mfu_end_to_end).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that spin while waiting collapse (10x slower) when another process wants the same
# cores; sleeping waiters keep both stacks usable on a shared machine. Read once, at torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def log(msg: str) -> None:
    print(f"[bench/rollout {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def images(n: int, size: int = 112) -> list[bytes]:
    """n distinct grey noise PNGs of one size, so every prompt has the same token length."""
    import numpy as np
    from PIL import Image

    out = []
    for i in range(n):
        a = (np.random.default_rng(i).random((size, size)) * 255).astype("uint8")
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def matmul_peak(dtype, n: int = 2048, reps: int = 12) -> float:
    """Best dense matmul FLOP/s torch reaches here with its current thread count."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def decode_params(model) -> int:
    """Parameters every decoded token multiplies through: text layers, final norm and lm_head."""
    lm = model.model.language_model
    return sum(p.numel() for p in lm.layers.parameters()) + sum(p.numel() for p in lm.norm.parameters()) \
        + model.lm_head.weight.numel()


def fresh(engine) -> None:
    """Every timed vLLM run starts cold: no KV blocks or vision-encoder outputs kept from the run before
    (transformers keeps nothing across `generate` calls either)."""
    engine.llm.reset_prefix_cache()
    engine.llm.llm_engine.reset_encoder_cache()


def vllm_run_s(engine, reqs, tokens: int, reps: int) -> float:
    """Best wall seconds of `reps` cold runs decoding exactly `tokens` tokens per request."""
    from medpo_ray.rollout.engine import SamplingSpec

    best = float("inf")
    for _ in range(reps):
        fresh(engine)
        res = engine.generate(reqs, SamplingSpec(max_tokens=tokens, ignore_eos=True))
        assert res.completion_tokens == len(reqs) * tokens, res.bad
        best = min(best, res.seconds)
    return best


def decode_tokens_per_s(engine, reqs, tokens: int, reps: int = 2) -> tuple[float, float, float]:
    """(tokens/s of the decode phase alone, seconds of a 1-token run, seconds of a `tokens` run): the
    tokens after the first over what the full run takes beyond a run that only prefills (prompt and
    image) and samples the first token, on the same requests."""
    first, full = vllm_run_s(engine, reqs, 1, reps), vllm_run_s(engine, reqs, tokens, reps)
    return len(reqs) * (tokens - 1) / (full - first), first, full


def hf_generate_s(model, processor, imgs, prompt: str, tokens: int) -> float:
    """Seconds for transformers to greedily decode `tokens` tokens for every image in one batch."""
    import torch

    from medpo_ray.models.inputs import open_image, render_prompt

    batch = processor(text=[render_prompt(processor, prompt)] * len(imgs),
                      images=[open_image(b) for b in imgs], return_tensors="pt").to(model.device)
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t
    assert out.shape[1] - batch["input_ids"].shape[1] == tokens
    return elapsed


def train_step_s(model, processor, rollouts, imgs, prompt: str) -> float:
    """One optimizer step (forward + backward + AdamW) over the rollouts: the learner's share of a step."""
    import torch

    from medpo_ray.models.inputs import build_batch, model_inputs, open_image

    batch = build_batch(processor, [open_image(b) for b in imgs], [prompt] * len(imgs),
                        [r.token_ids for r in rollouts])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()
    t = time.perf_counter()
    logits = model(**model_inputs(batch)).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch["input_ids"][:, 1:, None])
    loss = -(logp.squeeze(-1) * batch["completion_mask"][:, 1:]).sum() / batch["completion_mask"].sum()
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()
    return time.perf_counter() - t


def main() -> None:
    import torch

    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.loading import load_policy, load_processor
    from medpo_ray.models.presets import get_preset
    from medpo_ray.rollout.engine import RolloutEngine, RolloutRequest, SamplingSpec
    from medpo_ray.rollout.logprob_check import logprob_mismatch
    from medpo_ray.rollout.weight_sync.object_store import ObjectStoreSync

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--model", default=None, help="existing model directory instead of building the preset")
    ap.add_argument("--seqs", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--mfu-seqs", type=int, default=256,
                    help="sequences decoded together for rollout_mfu (default 256: an RL rollout batch)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--eager", action="store_true",
                    help="run vLLM eagerly (as the tests do) instead of torch.compile'd (30-45 s more start-up "
                         "on 2 cores, ~1.3-1.8x faster decode)")
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    load_start = os.getloadavg()[0]
    prompt = "Write the findings and impression of a radiology report for this image."

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or tmp
        if not args.model:
            log(f"building preset {args.preset}")
            build_model(model_dir, get_preset(args.preset), grammar_texts(), seed=0)
        peak = matmul_peak(dtype)
        log(f"dense matmul peak {peak / 1e9:.1f} GFLOP/s ({args.dtype}, {torch.get_num_threads()} threads)")

        t = time.perf_counter()
        engine = RolloutEngine(model_dir, dtype=args.dtype, max_model_len=512, enforce_eager=args.eager)
        log(f"vLLM engine up in {time.perf_counter() - t:.1f} s")
        imgs = images(args.seqs)
        reqs = [RolloutRequest(f"b{i}", b, prompt) for i, b in enumerate(imgs)]
        spec = SamplingSpec(max_tokens=args.tokens, ignore_eos=True)
        engine.generate(reqs[:2], SamplingSpec(max_tokens=4))  # first call compiles the sampler
        hf = load_policy(model_dir, args.dtype)
        if torch.cuda.is_available():  # the baseline runs where the engine runs
            hf = hf.to("cuda")
        processor = load_processor(model_dir)
        hf_generate_s(hf, processor, imgs[:2], prompt, 4)  # warm-up
        # Alternated, best of each: a slow spell of the shared machine then hits both sides alike.
        runs, hf_runs = [], []
        for rep in range(3):
            runs.append(vllm_run_s(engine, reqs, args.tokens, 1))
            hf_runs.append(hf_generate_s(hf, processor, imgs, prompt, args.tokens))
            log(f"run {rep}: vLLM {args.seqs * args.tokens / runs[-1]:.0f} tokens/s, transformers "
                f"{args.seqs * args.tokens / hf_runs[-1]:.0f} tokens/s")
        vllm_tps = args.seqs * args.tokens / min(runs)
        hf_tps = args.seqs * args.tokens / min(hf_runs)
        res = engine.generate(reqs, spec)  # the rollouts the train-step proxy learns from
        mfu_reqs = [RolloutRequest(f"m{i}", b, prompt) for i, b in enumerate(images(args.mfu_seqs))]
        decode_tps, first_s, full_s = decode_tokens_per_s(engine, mfu_reqs, args.tokens)
        log(f"vLLM decode phase at {args.mfu_seqs} x {args.tokens}: {decode_tps:.0f} tokens/s (1-token run "
            f"{first_s:.2f} s, full run {full_s:.2f} s)")
        # The peak again, right after: the higher of the two (the machine's speed drifts with others' load).
        peak = max(peak, matmul_peak(dtype))
        n_decode = decode_params(hf)
        mfu = 2 * n_decode * decode_tps / peak

        step_train = train_step_s(hf, processor, res.rollouts, imgs, prompt)  # also moves the weights
        log(f"train-step proxy {step_train:.2f} s")
        sync = ObjectStoreSync(engine)  # the flat transport, as the Ray fleet uses it
        sync_runs = [sync.sync(hf.named_parameters(), version=v) for v in (1, 2, 3)]
        weight_sync_s = min(r["sync_s"] for r in sync_runs)
        log(f"weight sync {weight_sync_s:.3f} s for {sync_runs[0]['bytes'] / 2**20:.1f} MiB")
        step_s = min(runs) + step_train + weight_sync_s

        check_reqs = reqs[:8]
        after = engine.generate(check_reqs, SamplingSpec(max_tokens=32))
        gap = logprob_mismatch(hf, processor, after.rollouts, {r.record_id: r.image for r in check_reqs},
                               {r.record_id: r.prompt for r in check_reqs})
        log(f"log-prob gap after sync: max {gap['logprob_max_abs_diff']:.2e} over {gap['tokens']} tokens")

    print(json.dumps({
        "preset": args.model or args.preset, "dtype": args.dtype, "compiled": not args.eager, "seqs": args.seqs, "tokens": args.tokens,
        "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in hf.parameters()),
        "decode_parameters": n_decode,
        "vllm_tokens_per_s": round(vllm_tps, 1), "hf_tokens_per_s": round(hf_tps, 1),
        "vllm_vs_hf_ratio": round(vllm_tps / hf_tps, 3), "matmul_peak_gflops": round(peak / 1e9, 1),
        "rollout_mfu": round(mfu, 3), "mfu_seqs": args.mfu_seqs, "vllm_decode_tokens_per_s": round(decode_tps, 1),
        "vllm_mfu_end_to_end": round(2 * n_decode * vllm_tps / peak, 3),
        "hf_mfu_end_to_end": round(2 * n_decode * hf_tps / peak, 3),
        "weight_sync_s": round(weight_sync_s, 4), "weight_sync_share": round(weight_sync_s / step_s, 4),
        "demo_step_s": round(step_s, 3), "logprob_max_abs_diff": gap["logprob_max_abs_diff"],
        "logprob_prompt_mismatches": gap["prompt_mismatches"],
        "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
        "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],  # others' work skews timings
    }))


if __name__ == "__main__":
    main()
