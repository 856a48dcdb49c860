"""Loss benchmarks: step time and peak memory of the FiRe-MPO loss paths (prints figures; last line is JSON).

(a) preset `dpo` vs TRL's DPO loss path (DPOTrainer.compute_loss) on the tiny model and a realistic batch
(8 pairs, 64 image tokens + text prompt, 3-sentence reports), forward + backward of policy and reference;
(b) `fire_mpo` (4 + 4 row forwards) vs `dpo` (2 + 2);
(c) the gathered and the chunked token KL vs a naive full N x T x V fp32 KL at vocabulary 150k.

Each configuration's peak memory is measured in a fresh subprocess: the kernel's RSS high-water mark
is reset (/proc/self/clear_refs) once the inputs exist, so the figure is what the step adds on top of
them. Every KL variant includes the dense N x T x V gradient of the policy logits (autograd needs it
whatever the KL does); `kl_logits_grad_mb` gives its size. Step times come from one process that runs the variants interleaved, so background load hits
them alike. One torch thread by default: on a shared 2-core machine two OpenMP threads spin against the
other load and make a 0.15 s step take seconds. Usage: python bench/loss.py [--rounds N] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

KL_SHAPE = (4, 96, 150_000)  # rows of y+ under x, positions, vocabulary (Qwen-size)
KL_EDITED_PER_ROW = 6
KL_CHUNK_ROWS = 4
PAIRS_PER_BATCH = 8
IMAGE_TOKENS = 64


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _peak_added_mb(fn) -> float:
    """RSS high-water mark added by fn() over the RSS when it starts (MB)."""
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024


# ---------- (a), (b): one step of the loss on the tiny model ----------

def _examples(tok):
    from medpo_ray.losses import PairExample, chat_prompt_ids
    from tests.unit.losses.tiny import report_sentences

    rng = random.Random(0)
    filler = report_sentences(200, seed=1)
    prompt = chat_prompt_ids(tok, "Describe the findings in this CT slice.", image_tokens=IMAGE_TOKENS)
    out = []
    for i in range(PAIRS_PER_BATCH):
        size, other = rng.sample(["small", "moderate", "large"], 2)
        head = f"There is a {size} nodule in the left lung, measuring {rng.randint(3, 30)} mm."
        pos = " ".join([head, *rng.sample(filler, 2)])
        neg = pos.replace(size, other, 1)
        a = pos.index(size)
        out.append(PairExample(f"b{i}", prompt, pos, neg, [(a, a + len(size))], [(a, a + len(other))]))
    return out


def _step_setup(variant: str):
    import torch

    from medpo_ray.config import LossConfig
    from medpo_ray.losses import build_preference_batch, fire_mpo_loss, needed_pairs
    from tests.unit.losses.tiny import build_model, build_tokenizer

    tok = build_tokenizer()
    model, ref = build_model(len(tok), hidden=128, seed=0), build_model(len(tok), hidden=128, seed=1)
    ref.requires_grad_(False)
    examples = _examples(tok)
    if variant == "trl":
        import datasets
        import trl
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        args = trl.DPOConfig(output_dir="/tmp/medpo_bench_trl", report_to=[], beta=0.1, use_cpu=True, bf16=False,
                             save_strategy="no", disable_tqdm=True)
        dummy = datasets.Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]})
        trainer = trl.DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dummy, processing_class=tok)
        inputs = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([
            {"prompt_ids": list(e.prompt_ids),
             "chosen_ids": tok(e.chosen, add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
             "rejected_ids": tok(e.rejected, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]}
            for e in examples])

        def step():
            model.zero_grad(set_to_none=True)
            trainer.compute_loss(model, inputs).backward()
        return step, int(inputs["input_ids"].numel())

    cfg = LossConfig.from_preset(variant)
    batch = build_preference_batch(examples, tok, pairs=needed_pairs(cfg))

    def step():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with torch.no_grad():
            ref_logits = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        fire_mpo_loss(logits, ref_logits, batch, cfg)[0].backward()
    return step, int(batch.input_ids.numel())


def child_step_memory(variant: str) -> dict:
    """Peak memory two loss steps of `variant` (trl, dpo, fire_mpo) add to a fresh process."""
    step, tokens = _step_setup(variant)
    return {"peak_mb": _peak_added_mb(lambda: [step() for _ in range(2)]), "tokens": tokens}


def child_step_timing(rounds: int) -> dict:
    """Median step seconds of trl, dpo and fire_mpo, run interleaved after two warm-up rounds."""
    steps = {v: _step_setup(v)[0] for v in ("trl", "dpo", "fire_mpo")}
    times = {v: [] for v in steps}
    for r in range(rounds + 2):
        for v, step in steps.items():
            t = time.perf_counter()
            step()
            if r >= 2:  # two warm-up rounds
                times[v].append(time.perf_counter() - t)
        if r >= 2 and (r - 1) % 5 == 0:
            print(f"  timing round {r - 1}/{rounds}", file=sys.stderr, flush=True)
    return {v: statistics.median(ts) for v, ts in times.items()}


# ---------- (c): token KL at vocabulary 150k ----------

def _kl_inputs():
    import torch

    N, T, V = KL_SHAPE
    g = torch.Generator().manual_seed(0)
    pol = torch.empty(N, T, V, dtype=torch.bfloat16)
    ref = torch.empty_like(pol)
    for n in range(N):  # row by row: never an fp32 N x T x V buffer while building inputs
        pol[n] = torch.randn(T, V, generator=g) * 2
        ref[n] = pol[n].float() + torch.randn(T, V, generator=g) * 0.5
    k = torch.zeros(N, T, dtype=torch.long)
    k[:, T - 1 - KL_EDITED_PER_ROW * 5:T - 1:5] = 1
    return pol.requires_grad_(True), ref, torch.zeros(N, T, dtype=torch.long), k


def _naive_kl(pol, ref, k, lam=0.5):
    """Full N x T x V fp32 bidirectional KL, then masked: the baseline memory shape."""
    import torch

    lt, lr = torch.log_softmax(pol.float(), -1), torch.log_softmax(ref.float(), -1)
    per_pos = lam * (lr.exp() * (lr - lt)).sum(-1) + (1 - lam) * (lt.exp() * (lt - lr)).sum(-1)
    return (per_pos[:, :-1] * k[:, 1:]).sum()


def child_kl(variant: str) -> dict:
    """Peak memory and time of one KL forward + backward: naive, gathered or chunked."""
    from medpo_ray.losses import token_kl

    pol, ref, ids, k = _kl_inputs()

    def run():
        if variant == "naive":
            loss = _naive_kl(pol, ref, k)
        else:
            fkl, rkl = token_kl(pol, ref, ids, k, KL_CHUNK_ROWS if variant == "chunked" else 0)
            loss = (0.5 * fkl + 0.5 * rkl).sum()
        loss.backward()

    t = time.perf_counter()
    peak = _peak_added_mb(run)
    return {"peak_mb": peak, "time_s": time.perf_counter() - t}


# ---------- driver ----------

def _child(args: list[str], threads: int) -> dict:
    t = time.perf_counter()
    # A fixed mmap threshold makes glibc return every freed buffer over 64 KiB to the kernel, so RSS
    # follows live tensor memory (what torch.cuda.max_memory_allocated reports on a GPU) instead of
    # heap pages glibc keeps after a chunk is freed. Buffers over 32 MiB are mmapped in any case.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--child", *args],
                         capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if out.returncode != 0:
        sys.exit(f"bench child {args} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {' '.join(args):<18} {json.dumps(result)}  ({time.perf_counter() - t:.1f} s)", flush=True)
    return result


def main() -> None:
    """Run every configuration in its own subprocess and print the figures, the last line as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20, help="timed steps per variant (after 2 warm-up rounds)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per benchmark process")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        kind, *rest = args.child
        result = {"timing": lambda: child_step_timing(int(rest[0])), "step": lambda: child_step_memory(rest[0]),
                  "kl": lambda: child_kl(rest[0])}[kind]()
        print(json.dumps(result))
        return

    t0 = time.perf_counter()
    print(f"(a, b) tiny model, {PAIRS_PER_BATCH} pairs, {IMAGE_TOKENS} image tokens; "
          f"(c) KL at N, T, V = {KL_SHAPE}, {KL_EDITED_PER_ROW} edited tokens per row", flush=True)
    times = _child(["timing", str(args.rounds)], args.threads)
    mem = {v: _child(["step", v], args.threads) for v in ("trl", "dpo", "fire_mpo")}
    kl = {v: _child(["kl", v], args.threads) for v in ("naive", "gathered", "chunked")}
    figures = {
        "dpo_vs_trl_time_ratio": times["dpo"] / times["trl"],
        "fire_mpo_vs_dpo_time_ratio": times["fire_mpo"] / times["dpo"],
        "kl_mem_ratio_vs_naive": kl["chunked"]["peak_mb"] / kl["naive"]["peak_mb"],
        "kl_peak_mem_mb": kl["chunked"]["peak_mb"],
        "naive_kl_peak_mem_mb": kl["naive"]["peak_mb"],
        "kl_gathered_peak_mem_mb": kl["gathered"]["peak_mb"],
        "kl_logits_grad_mb": KL_SHAPE[0] * KL_SHAPE[1] * KL_SHAPE[2] * 2 / 2**20,
        "kl_time_s": kl["chunked"]["time_s"], "kl_gathered_time_s": kl["gathered"]["time_s"],
        "naive_kl_time_s": kl["naive"]["time_s"],
        "trl_step_s": times["trl"], "dpo_step_s": times["dpo"], "fire_mpo_step_s": times["fire_mpo"],
        "trl_step_peak_mem_mb": mem["trl"]["peak_mb"], "dpo_step_peak_mem_mb": mem["dpo"]["peak_mb"],
        "fire_mpo_step_peak_mem_mb": mem["fire_mpo"]["peak_mb"],
        "dpo_tokens": mem["dpo"]["tokens"], "fire_mpo_tokens": mem["fire_mpo"]["tokens"],
        "kl_vocab": KL_SHAPE[2], "threads": args.threads, "bench_s": time.perf_counter() - t0,
    }
    for k, v in figures.items():
        print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
