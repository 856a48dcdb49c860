#!/usr/bin/env bash
# The GPU path in one command, for a machine with one or more NVIDIA GPUs and `pip install -e .[gpu,test]`
# done (vLLM's CUDA build, Ray, DeepSpeed; nothing is downloaded here). Budget: under 8 minutes on one GPU.
#   1. bench/rollout.py on the `small` preset in bf16: vLLM on the GPU against transformers generate on the
#      same GPU, one weight sync, the vLLM-vs-transformers log-prob gap after it;
#   2. `medpo-ray train`: a tiny policy's short SFT, then 5 on-policy steps with a GPU rollout engine and a
#      GPU learner sharing the GPU (0.5 each), weight sync and the live log-prob check every step.
# The last line printed is one JSON object: vllm_tokens_per_s, hf_tokens_per_s, vllm_vs_hf_ratio,
# weight_sync_s (bench), train_sync_s_max, logprob_mismatch_bench, logprob_mismatch_train_max, steps,
# peak_gpu_mib (sampled with nvidia-smi), seconds.
# MEDPO_CHECK_DEVICE=cpu runs the same checks on CPU (fp32, no GPU request): how the script is tested.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
device=${MEDPO_CHECK_DEVICE:-cuda}
work=$(mktemp -d /tmp/medpo-gpu-check-XXXXXX)
start=$(date +%s)
if [ "$device" = cuda ]; then
  dtype=bfloat16; bf16=true; gpu=0.5
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$work/gpu_mem.csv" &
  sampler=$!
  trap 'kill $sampler 2>/dev/null || true' EXIT
  export VLLM_ENABLE_V1_MULTIPROCESSING=${VLLM_ENABLE_V1_MULTIPROCESSING:-1}  # what a GPU run uses
else
  dtype=float32; bf16=false; gpu=0
  export VLLM_ENABLE_V1_MULTIPROCESSING=0 DS_ACCELERATOR=cpu VLLM_CPU_KVCACHE_SPACE=1
fi
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

echo "[gpu_check] 1/2 rollout bench (small, $dtype) -> $work/rollout.log"
$PY bench/rollout.py --preset small --dtype "$dtype" --seqs 16 --tokens 64 --mfu-seqs 64 | tee "$work/rollout.log"

echo "[gpu_check] 2/2 five on-policy steps (tiny, $dtype, GPU share $gpu per engine and learner)"
$PY -m driver.cli train --config configs/demo.yaml \
  --set run.out_dir="$work/run" --set data.path="$work/data" --set data.studies=300 --set data.task=vqa \
  --set model.preset=tiny --set model.build_dir="$work/models" --set model.dtype="$dtype" \
  --set sft.steps=150 --set sft.out_dir="$work/sft" --set sft.noise.hallucinate=0 --set sft.noise.flip_side=0 \
  --set train.steps=5 --set train.batch_size=4 --set train.micro_batch=2 --set train.num_learners=1 \
  --set train.checkpoint_every=5 --set train.bf16="$bf16" --set train.gpus_per_rank="$gpu" \
  --set rollout.num_engines=1 --set rollout.gpus_per_engine="$gpu" --set guard.every=0 \
  | tee "$work/train.log"

$PY - "$work" "$device" "$start" <<'EOF'
import json, sys, time
from pathlib import Path

work, device, start = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
bench = json.loads([x for x in (work / "rollout.log").read_text().splitlines() if x.startswith("{")][-1])
steps = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
mem = work / "gpu_mem.csv"
peak = max((int(x.split(",")[0]) for x in mem.read_text().split() if x.strip().isdigit()), default=None) \
    if mem.exists() else None
print(json.dumps({
    "device": device, "vllm_tokens_per_s": bench.get("vllm_tokens_per_s"), "hf_tokens_per_s": bench.get("hf_tokens_per_s"),
    "vllm_vs_hf_ratio": bench.get("vllm_vs_hf_ratio"), "weight_sync_s": bench.get("weight_sync_s"),
    "logprob_mismatch_bench": bench.get("logprob_max_abs_diff"),
    "train_sync_s_max": max((s["sync_s"] for s in steps if "sync_s" in s), default=None),
    "logprob_mismatch_train_max": max((s["logprob_mismatch"] for s in steps if "logprob_mismatch" in s), default=None),
    "steps": len(steps), "peak_gpu_mib": peak, "seconds": int(time.time()) - start}))
EOF
