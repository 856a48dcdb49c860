"""The rollout engine: an in-process vLLM `LLM` that decodes (image, prompt) items into completions
with per-token log-probs, tagged with the policy_version of the weights that produced them."""
from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medpo_ray.data.record import BadRecord
from medpo_ray.errors import MedpoError
from medpo_ray.models.families import family_of
from medpo_ray.models.inputs import ImageError, image_token_count, open_image, render_prompt
from medpo_ray.models.loading import (
    check_model_dir,
    load_processor,
    parameter_layouts,
    read_config,
    vision_token_ids,
)
from medpo_ray.models.tokenizer import VISION_TOKENS
from medpo_ray.rollout.weight_sync.base import WeightManifest, WeightPush, WeightSyncError
from medpo_ray.rollout.weight_sync.flat import FlatBucket
from medpo_ray.rollout.weight_sync.object_store import push_header
from medpo_ray.rollout.worker_ext import WORKER_EXTENSION


@dataclass(frozen=True)
class SamplingSpec:
    """How to decode: temperature 0 is greedy; each of the n samples gets its own derived seed."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 96
    seed: int = 0
    ignore_eos: bool = False  # decode exactly max_tokens (benchmarks compare equal lengths)

    @classmethod
    def from_config(cls, rollout) -> SamplingSpec:
        """From a `RolloutConfig` section."""
        return cls(n=rollout.n, temperature=rollout.temperature, top_p=rollout.top_p,
                   max_tokens=rollout.max_tokens, seed=rollout.seed)


@dataclass(frozen=True)
class RolloutRequest:
    """One item to decode: `image` as encoded bytes (or a PIL image), `prompt` as plain text."""

    record_id: str
    image: Any
    prompt: str


@dataclass(frozen=True)
class Rollout:
    """One sampled completion; `logprobs[i]` is log p(token_ids[i]) under the raw (untempered) policy."""

    record_id: str
    sample: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: list[float]
    finish_reason: str
    policy_version: int


@dataclass
class GenerateResult:
    """Completions of the usable items and a BadRecord (item, field, reason) for each refused one."""

    rollouts: list[Rollout] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def completion_tokens(self) -> int:
        """Tokens generated in this call."""
        return sum(len(r.token_ids) for r in self.rollouts)


def sample_seed(seed: int, record_id: str, sample: int) -> int:
    """Per-sample seed that depends on the item, not on its batch-mates (reproducible re-issues)."""
    return zlib.crc32(f"{seed}/{record_id}/{sample}".encode())


def _configure_env(kv_cache_gib: float) -> None:
    import torch

    if not torch.cuda.is_available():
        # In-process engine on CPU: starts in seconds and half the memory of the multiprocess one.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(max(1, round(kv_cache_gib)))


class RolloutEngine:
    """Owns one vLLM engine over a model directory; see `generate` and `apply_push`."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", max_model_len: int = 512,
                 kv_cache_gib: float = 1.0, seed: int = 0, unpacked_linear_bytes: int | None = None, **engine_kwargs):
        from vllm import LLM

        self.model_dir = check_model_dir(model_dir)
        self.max_model_len = max_model_len
        self.processor = load_processor(self.model_dir)
        self.manifest = WeightManifest(parameter_layouts(self.model_dir))
        config = read_config(self.model_dir)
        tokens = len(self.processor.tokenizer)
        # Only the tokenizer's real tokens minus the vision placeholders: a random or young policy
        # would otherwise sample <|image_pad|> (breaking the learner's image alignment) or padding rows.
        vocab = self.processor.tokenizer.get_vocab()
        forbidden = vision_token_ids(self.model_dir) | {vocab[t] for t in VISION_TOKENS if t in vocab}
        self.allowed_token_ids = sorted(set(range(tokens)) - forbidden)
        _configure_env(kv_cache_gib)
        limit = {"image": 1, "video": 0} if "video_token_id" in config else {"image": 1}
        try:
            # Eager by default: torch.compile would cost minutes of start-up on a 2-core machine.
            kwargs = {"enforce_eager": True, "limit_mm_per_prompt": limit, **engine_kwargs}
            self.llm = LLM(model=str(self.model_dir), dtype=dtype, max_model_len=max_model_len, seed=seed,
                           worker_extension_cls=WORKER_EXTENSION, **kwargs)
        except (OSError, ValueError) as e:
            raise MedpoError(f"vLLM cannot serve {self.model_dir}: {e}") from None
        self.multiprocess = type(self.llm.llm_engine.engine_core).__name__ != "InprocClient"
        # In-process on CPU the worker disables torch.set_num_threads for the whole process and warns on
        # every call; vLLM's own renderer calls it twice per image request, flooding the actor logs.
        logging.getLogger("vllm.v1.worker.cpu_worker").setLevel(logging.ERROR)
        # CPU weight pushes: see inplace_reload.UNPACKED_MAX_BYTES; names: the family's vLLM prefixes.
        prefixes = [list(p) for p in family_of(config.get("model_type")).vllm_prefixes]
        self.llm.collective_rpc("medpo_configure", kwargs={"unpacked_max_bytes": unpacked_linear_bytes,
                                                           "rename_prefixes": prefixes})
        self.policy_version = 0

    # ---------------------------------------------------------------- generation
    def _prepare(self, req: RolloutRequest) -> dict:
        image = open_image(req.image, req.record_id)
        n_image = image_token_count(self.processor, image, req.record_id)
        text = render_prompt(self.processor, req.prompt)
        # The chat template holds one placeholder that the processor expands to n_image tokens.
        n_text = len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        length = n_text - 1 + n_image
        if length >= self.max_model_len:
            raise MedpoError(f"item {req.record_id!r}: prompt is {length} tokens with the image, the context "
                             f"holds {self.max_model_len} (prompt + at least one generated token)")
        return {"prompt": text, "multi_modal_data": {"image": image}}

    def generate(self, requests: Sequence[RolloutRequest], spec: SamplingSpec = SamplingSpec()) -> GenerateResult:
        """Decode every usable request `spec.n` times; unusable ones come back as BadRecords."""
        from vllm import SamplingParams

        t0 = time.perf_counter()
        result = GenerateResult()
        prompts, params, keys = [], [], []
        for req in requests:
            try:
                prompt = self._prepare(req)
            except ImageError as e:
                result.bad.append(BadRecord(req.record_id, "image", str(e), source="rollout"))
                continue
            except MedpoError as e:
                result.bad.append(BadRecord(req.record_id, "prompt", str(e), source="rollout"))
                continue
            for k in range(spec.n):
                prompts.append(prompt)
                params.append(SamplingParams(
                    n=1, temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_tokens,
                    seed=sample_seed(spec.seed, req.record_id, k), logprobs=0, ignore_eos=spec.ignore_eos,
                    allowed_token_ids=self.allowed_token_ids))
                keys.append((req.record_id, k))
        if prompts:
            outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
            for (record_id, k), out in zip(keys, outputs, strict=True):
                comp = out.outputs[0]
                lps = [step[tok].logprob for step, tok in zip(comp.logprobs, comp.token_ids, strict=True)]
                result.rollouts.append(Rollout(
                    record_id=record_id, sample=k, prompt_token_ids=list(out.prompt_token_ids),
                    token_ids=list(comp.token_ids), text=comp.text, logprobs=lps,
                    finish_reason=str(comp.finish_reason), policy_version=self.policy_version))
        result.seconds = time.perf_counter() - t0
        return result

    # ---------------------------------------------------------------- weight sync
    def weight_manifest(self) -> WeightManifest:
        """Names and shapes a push must carry (for senders that check before sending)."""
        return self.manifest

    def apply_push(self, push: WeightPush) -> dict:
        """Check a push against the model, load it in one worker RPC, reset caches, bump the version."""
        t0 = time.perf_counter()
        self._check_version(push.version)
        header = push_header(push)
        omitted = frozenset().union(*(getattr(b, "omitted", ()) for b in push.buckets))
        layout = self.manifest.check(header, omitted)
        # The multiprocess engine (every GPU run) msgpack-encodes an RPC's arguments: plain data for it; the
        # in-process one gets the buckets as they are (views of the object store's memory, no copy).
        buckets = [b.wire() if self.multiprocess and isinstance(b, FlatBucket) else b for b in push.buckets]
        replies = self.llm.collective_rpc("medpo_load_weights", args=(push.transport, buckets))
        errors = [r["error"] for r in replies if "error" in r]
        if errors:
            raise WeightSyncError(f"weight push v{push.version} refused, previous weights keep serving: "
                                  + "; ".join(errors))
        self._serve_new_weights(push.version)
        first = replies[0]
        return {"policy_version": self.policy_version, "tensors": len(header), "omitted": len(omitted),
                "layout": layout,
                "reload_s": max(r["reload_s"] for r in replies), "reload_path": first["reload_path"],
                "skipped_frozen": first["skipped_frozen"], "layers_repacked": first["layers_repacked"],
                "apply_s": time.perf_counter() - t0}

    def _check_version(self, version: int) -> None:
        if version <= self.policy_version:
            raise WeightSyncError(f"weight push v{version} is not newer than the serving "
                                  f"policy_version {self.policy_version}")

    def _serve_new_weights(self, version: int) -> None:
        # Cached KV blocks and vision-encoder outputs were computed by the old weights.
        if self.llm.llm_engine.vllm_config.cache_config.enable_prefix_caching:
            self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.policy_version = version
