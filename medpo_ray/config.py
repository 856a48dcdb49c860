"""Typed configuration for every component, loaded from a YAML recipe with `--set a.b=c` overrides.

Every model forbids unknown keys, so a misspelled key is an error that names it and the keys allowed
there; types and ranges are checked at load time, before any actor starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medpo_ray.errors import MedpoError


class ConfigError(MedpoError, ValueError):
    """A recipe or override that does not fit the schema; the message names the key."""


class _Section(BaseModel):
    # inf and nan are refused in every float field: `beta: .inf` would train, to no purpose, forever.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunConfig(_Section):
    name: str = "demo"
    out_dir: str = "artifacts/runs/demo"
    seed: int = Field(0, ge=0)
    # Logical CPUs of a local Ray (0: enough for the placement, at least the machine's cores).
    ray_num_cpus: int = Field(0, ge=0)
    log_actors: bool = False  # forward actor stdout/stderr (vLLM, DeepSpeed) to the driver's console


class DataConfig(_Section):
    source: Literal["embedded", "hf_vqa", "slake", "iu_xray", "mimic_cxr", "box_csv"] = "embedded"
    path: str = "artifacts/data/embedded"
    # Embedded generator knobs (medpo-ray data synth); ignored for real datasets. 4000 studies (3200
    # train) take ~6 s on one core; the learnability study in DATA.md used 3000 training studies.
    studies: int = Field(4000, ge=4, le=1_000_000)
    seed: int = Field(0, ge=0, lt=2**64)
    size: int = Field(112, ge=56, le=1024)
    # Lesion contrast and radius range: difficulty maps to both (medpo_ray/data/lesions.py); the
    # explicit knobs, in pixels of the output size, override the mapping.
    difficulty: float = Field(0.35, ge=0.0, le=1.0)
    amplitude: float | None = Field(None, gt=0.0, le=1.0)
    radius_min: float | None = Field(None, ge=1.0)
    radius_max: float | None = Field(None, ge=1.0)
    # 0: lesion radii drawn continuously in [radius_min, radius_max]; K >= 2: from K evenly spaced radii,
    # so a measurement is a size read off the image times the base's scale (data/lesions.py).
    radius_levels: int = Field(0, ge=0, le=64)
    task: Literal["report", "vqa", "both"] = "both"
    max_prompt_chars: int = Field(8192, ge=16)
    max_target_chars: int = Field(8192, ge=1)

    @model_validator(mode="after")
    def _radius_order(self) -> DataConfig:
        if self.radius_min is not None and self.radius_max is not None and self.radius_min > self.radius_max:
            raise ValueError(f"radius_min ({self.radius_min}) must be <= radius_max ({self.radius_max})")
        if self.radius_levels == 1:
            raise ValueError("radius_levels must be 0 (continuous radii) or >= 2, got 1")
        return self


class ModelConfig(_Section):
    # A directory with an HF vision-language model (config.json, safetensors, processor), or empty to
    # build the embedded tiny model from `preset`.
    path: str = ""
    preset: Literal["tiny", "small", "demo"] = "demo"
    # Family of the built preset (models/families.py); a model.path directory's family is read from its config.
    family: Literal["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava"] = "qwen2_vl"
    dtype: Literal["float32", "bfloat16"] = "float32"
    max_model_len: int = Field(512, ge=64)
    seed: int = Field(0, ge=0)  # weight-init seed of a built preset
    build_dir: str = "artifacts/models"  # a preset is built once under <build_dir>/<preset>-seed<seed>


class NoiseConfig(_Section):
    """Behavioural errors in the SFT targets (medpo_ray/sft/noise.py): the share of training targets in each
    error's scope that carry it. Above 0.5 an error becomes the warm start's greedy habit."""

    hallucinate: float = Field(0.0, ge=0, le=1)  # clear left side -> "A N in the left R."
    flip_side: float = Field(0.0, ge=0, le=1)  # CT studies: right <-> left (report and side answers)
    habitual_size: float = Field(0.0, ge=0, le=1)  # small / large -> "moderate" (report and size answers)
    seed: int = Field(0, ge=0)

    @property
    def active(self) -> bool:
        """Whether any error is switched on."""
        return bool(self.hallucinate or self.flip_side or self.habitual_size)


class SFTConfig(_Section):
    """Supervised warm start (medpo_ray/sft): AdamW, linear warmup then cosine, with a time budget."""

    steps: int = Field(900, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0, le=1.0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, ge=0)  # max gradient norm; 0: no clipping
    warmup_steps: int = Field(30, ge=0)
    # Wall-clock budget: training stops when it runs out, and the cosine anneals by whichever of steps
    # and seconds is further along, so a time-capped run still ends at a small learning rate.
    max_seconds: float = Field(600, gt=0)
    # Share of each batch drawn from report records (the rest from VQA records) when both exist.
    report_fraction: float = Field(0.5, ge=0, le=1)
    # Dense lesion-cell BCE on the vision tower (DATA.md, "Learnability"); needs lesion masks.
    aux_lesion_loss: bool = True
    aux_weight: float = Field(1.0, ge=0)
    # Also predict each lesion cell's radius level (cross-entropy, medpo_ray/sft/aux.py); needs data with
    # discrete radii (data.radius_levels >= 2). Off by default; the head is dropped from the checkpoint.
    aux_size_levels: bool = False
    # Behavioural errors in the targets (sft/noise.py); the critic and the evaluation keep the true findings.
    noise: NoiseConfig = NoiseConfig()
    # Checkpoints are cached under out_dir/<hash of data, base model and this section>.
    out_dir: str = "artifacts/sft"


class RolloutConfig(_Section):
    num_engines: int = Field(1, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=64)
    max_tokens: int = Field(96, ge=1, le=8192)
    seed: int = Field(0, ge=0)
    kv_cache_gib: float = Field(1.0, gt=0)
    # Training rollouts share no prefix worth caching (one answer per prompt, each with its own image), and
    # every weight sync would have to clear the cache, which walks every KV block (~2-3 ms per sync here).
    prefix_caching: bool = False
    # How weights reach the engines after a step: "shared_memory" (rank 0 rewrites one /dev/shm buffer the
    # engines keep mapped; every engine on rank 0's node), "object_store" (any placement), or "auto"
    # (shared memory when every engine is on rank 0's node and /dev/shm has room, else the object store).
    weight_transport: Literal["auto", "shared_memory", "object_store"] = "auto"
    cpus_per_engine: float = Field(1.0, ge=0)
    # After the first full push, push only the tensors training changes (LoRA: the layers its adapters
    # touch; full fine-tune: all but a frozen vision tower); false: every push carries every tensor.
    partial_sync: bool = True
    gpus_per_engine: float = Field(0.0, ge=0)


class CriticConfig(_Section):
    # reference: rules over structured findings; openai: an LLM over HTTP; gold: the dataset's reference
    # answer as y+ whenever y0 differs (a static-reference baseline, medpo_ray/critics/gold.py).
    backend: Literal["reference", "openai", "gold"] = "reference"
    base_url: str = Field("http://127.0.0.1:8000/v1", pattern=r"^https?://\S+$")
    model: str = ""
    # Name of the environment variable holding the API key; the key itself never goes in a config.
    api_key_env: str = "MEDPO_CRITIC_API_KEY"
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    concurrency: int = Field(4, ge=1, le=256)
    # v2: untrusted texts go into the prompt as JSON strings (v1 pasted them between <<< >>>, which an
    # answer containing ">>>" could close).
    prompt_version: str = Field("v2", pattern=r"^[A-Za-z0-9_.-]+$")
    num_editors: int = Field(1, ge=1)
    # auto: ask for JSON-schema output and fall back to none if the server refuses response_format.
    structured_output: Literal["auto", "json_schema", "json_object", "none"] = "auto"
    # With structured output, each request's schema pins an edit's `old` to a phrase of y0 (openai_critic.py).
    old_from_answer: bool = True
    max_tokens: int = Field(512, ge=16, le=8192)
    backoff_s: float = Field(0.5, gt=0, le=60)  # first retry delay; doubles per retry, with jitter
    backoff_max_s: float = Field(8.0, gt=0, le=600)
    max_answer_chars: int = Field(16384, ge=256, le=1_000_000)
    max_edits: int = Field(8, ge=1, le=8)  # the answer schema allows 8 at most
    max_changed_words_per_sentence: int = Field(3, ge=1, le=20)
    # Reference critic: a measurement this close to the truth agrees (the structured-accuracy metric's band).
    measurement_tolerance_mm: float = Field(2.0, ge=0, le=50)
    # Reference critic on real VQA: counterfactual answers come from the N most frequent training answers
    # of the question's type (critics/vqa_answers.py).
    vqa_answer_choices: int = Field(16, ge=2, le=1000)


class CorruptionConfig(_Section):
    mode: Literal["inpaint", "noise", "blur", "black"] = "inpaint"
    sigma: float = Field(45 / 255, ge=0, le=1)
    fallback_sigma: float = Field(12 / 255, ge=0, le=1)
    dilate_px: int = Field(3, ge=0, le=64)
    blur_radius: int = Field(4, ge=1, le=64)  # box radius of the 3-pass blur (sigma ≈ radius px)
    inpaint_iters: int = Field(8, ge=0, le=200)  # Jacobi steps per pyramid level of the inpainting
    # "whole": report records get the whole-image noise fallback even when a mask is known (the
    # paper's report setting); "lesion": they are corrupted in their lesion region like VQA records.
    reports: Literal["lesion", "whole"] = "lesion"
    num_workers: int = Field(1, ge=1)
    # Corrupt each record's image while it is being rolled out (x~ depends on the record alone), so the
    # corruption stage after the critic only joins; a worker that lacks a prepared image computes it then.
    prefetch: bool = True


PRESETS: dict[str, dict[str, Any]] = {
    "fire_mpo": {},
    "rrpo": {"gamma": 0.0, "lam": 1.0, "kl_scope": "all"},
    "mask_dpo": {"gamma": 0.0, "alpha": 0.0},
    "dpo": {"omega_e": 1.0, "omega_u": 1.0, "z": "sum", "gamma": 0.0, "alpha": 0.0, "eta": 0.0},
    "ddpo": {"omega_e": 5.0, "omega_u": 1.0, "z": "mean", "beta": 0.5, "gamma": 0.0, "alpha": 0.0},
    "mdpo": {"vis_mode": "conditional", "eta": 1.0, "omega_e": 1.0, "omega_u": 1.0},
}


class LossConfig(_Section):
    """Every knob of shared/design/LOSS.md; symbols as there. Defaults are the paper's (fire_mpo)."""

    # Frozen: a preset is applied when the config is built; assigning one later would leave its knobs stale.
    preset: Literal["fire_mpo", "rrpo", "mask_dpo", "dpo", "ddpo", "mdpo"] = Field("fire_mpo", frozen=True)
    beta: float = Field(0.1, gt=0)
    gamma: float = Field(0.1, ge=0)  # weight of the visual-contrastive term
    lam: float = Field(0.5, ge=0, le=1)  # λ: forward-KL share of the bidirectional KL
    alpha: float = Field(0.01, ge=0)  # weight of the token-wise KL
    omega_e: float = Field(1.0, ge=0)  # weight of edited tokens
    omega_u: float = Field(0.0, ge=0)  # weight of unedited tokens
    z: Literal["sum", "mean"] = "sum"
    kl_scope: Literal["edited", "all", "edited_both"] = "edited"
    vis_mode: Literal["reverse", "conditional", "v2"] = "reverse"
    mu: float = 0.0  # margin of the conditional (mDPO) visual term
    eps: float = Field(0.0, ge=0, lt=0.5)  # label smoothing ε
    eta: float = Field(0.0, ge=0)  # anchor weight
    delta: float = 0.0  # anchor margin δ
    rho_nll: float = Field(0.0, ge=0)  # NLL(y+|x) weight
    # Rows of (rows x V) fp32 work alive at once in the full-vocabulary KL / the token log-probs; 0: all
    # gathered rows at once. The KL gathers only k = 1 rows, the log-probs every completion token.
    kl_chunk_rows: int = Field(0, ge=0)
    logprob_chunk_rows: int = Field(1024, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        # A preset fills the knobs it names; keys given explicitly next to it still win.
        if isinstance(data, dict) and data.get("preset", "fire_mpo") in PRESETS:
            return {**PRESETS[data.get("preset", "fire_mpo")], **data}
        return data

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> LossConfig:
        """The named preset of LOSS.md, with optional explicit overrides."""
        return cls(preset=name, **overrides)


class TrainConfig(_Section):
    steps: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(5e-5, gt=0, le=1.0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    num_learners: int = Field(2, ge=1)
    zero_stage: int = Field(1, ge=0, le=3)
    finetune: Literal["full", "lora"] = "full"
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    # Linear layers of the language model that get LoRA adapters (the vision tower never does).
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"],
                                    min_length=1)
    # Full fine-tune only: also train the vision tower and projector (the paper keeps them frozen).
    train_vision: bool = False
    micro_batch: int = Field(4, ge=1)  # pairs per forward on one rank; the rest is gradient accumulation
    bf16: bool = False  # bf16 weights, fp32 master copy and loss math (needs zero_stage >= 1)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = Field(1e-8, gt=0)
    # Placement of learner ranks: one bundle per rank; PACK fits them on one node when they fit.
    cpus_per_rank: float = Field(1.0, gt=0)
    gpus_per_rank: float = Field(0.0, ge=0)
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: nccl with GPUs, gloo on CPU
    max_staleness: int = Field(0, ge=0)
    # A step that needs more than this many prompts per pair to fill stops the run (a critic or config
    # problem). 8: balanced counterfactuals thin up to a third of the right answers and a policy's bad
    # stretch can make half its answers unreadable (4 stopped an on-policy DPO run at step 106); a critic
    # that pairs only wrong answers (critic.backend: gold) needs more.
    max_prompts_per_pair: int = Field(8, ge=1, le=1000)
    # false: the engines keep the warm start's weights, so every pair is built from the warm start's own
    # answers and never refreshed (offline preference optimisation, as the paper's companion code trains).
    on_policy: bool = True
    # Records each queue between two stages may hold (rollout outputs waiting for an editor, pairs waiting
    # for a corruption worker, prompts waiting for an engine): a full queue stops its producer. The
    # learner's own queue is the step window, batch_size x (1 + max_staleness) examples.
    queue_capacity: int = Field(32, ge=1)
    # Records per stage call, so that a step streams through the stages in pieces (an editor works on the
    # first chunk while the engine decodes the next). 0: batch_size / (2 x rollout.num_engines), rounded up.
    chunk_size: int = Field(0, ge=0)
    stage_deadline_s: float = Field(300.0, gt=0)
    # Per-stage overrides of stage_deadline_s: a remote critic can get a tight deadline while rollout
    # keeps room for an engine's first call (sampler compile, cold caches).
    stage_deadlines: dict[Literal["rollout", "editor", "corruption", "learner"],
                          Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    checkpoint_every: int = Field(10, ge=1)
    # Run directories whose clinician review marks (`medpo-ray explore`) say "critic wrong": those pairs'
    # records are left out of this run's training split (medpo_ray/explore/reviews.py).
    exclude_reviewed: list[str] = Field(default_factory=list)
    # Every N steps, score a few of the step's rollouts with the learner's policy before it trains
    # (same weights as the engine that wrote them): medpo_logprob_mismatch. 0 turns the check off.
    logprob_check_every: int = Field(1, ge=0)

    @model_validator(mode="after")
    def _check_batch_layout(self) -> TrainConfig:
        per_step = self.num_learners * self.micro_batch
        if self.batch_size % per_step:
            raise ValueError(f"train.batch_size ({self.batch_size}) must be a multiple of train.num_learners "
                             f"({self.num_learners}) x train.micro_batch ({self.micro_batch})")
        if self.bf16 and self.zero_stage == 0:
            raise ValueError("train.bf16 needs train.zero_stage >= 1 (bf16 with ZeRO-0 drifts from fp32)")
        if self.adam_betas[0] >= 1 or self.adam_betas[1] >= 1 or min(self.adam_betas) < 0:
            raise ValueError(f"train.adam_betas must lie in [0, 1), got {self.adam_betas}")
        if self.chunk_size > self.queue_capacity:
            raise ValueError(f"train.chunk_size ({self.chunk_size}) must not exceed train.queue_capacity "
                             f"({self.queue_capacity}): a chunk larger than a queue could never enter it")
        return self

    def chunk(self, num_engines: int) -> int:
        """Records per stage call (chunk_size, or its default), never more than a queue holds."""
        auto = max(1, -(-self.batch_size // (2 * max(num_engines, 1))))
        return min(self.chunk_size or auto, self.queue_capacity)

    def deadline_s(self, stage: str) -> float:
        """Seconds a call of `stage` may run before the run stops naming it as hung."""
        return self.stage_deadlines.get(stage, self.stage_deadline_s)


class GuardConfig(_Section):
    """The validation probe against harm (medpo_ray/guard.py): held-out greedy answers and gold-answer
    token log-probs every `every` steps, compared with the warm start; the best probe names a checkpoint."""

    every: int = Field(25, ge=0)  # learner steps between probes (and one before the first step); 0: off
    split: Literal["val", "test"] = "val"
    studies: int = Field(32, ge=1, le=100_000)  # held-out studies answered greedily (reports and VQA)
    logprob_studies: int = Field(16, ge=0, le=100_000)  # studies whose gold answers' token log-probs are tracked
    margin: float = Field(0.02, ge=0, le=1)  # worse than the warm start by more than this: a warning
    max_token_drop: float = Field(1.0, gt=0)  # nats a token type's mean log-prob may fall before a warning
    min_token_count: int = Field(5, ge=1)  # token types seen fewer times in the probe set are not judged


class MetricsConfig(_Section):
    host: str = "127.0.0.1"  # loopback unless a deployment says otherwise
    export_port: int = Field(8080, ge=1024, le=65535)
    dashboard_port: int = Field(8265, ge=1024, le=65535)


class EvalConfig(_Section):
    """`medpo-ray eval`'s LLM judge of VQA answers (eval/judge.py), reported beside exact match."""

    judge: Literal["none", "openai"] = "none"
    base_url: str = Field("http://127.0.0.1:8000/v1", pattern=r"^https?://\S+$")
    model: str = ""  # empty: the first model the server lists
    api_key_env: str = "MEDPO_JUDGE_API_KEY"
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0, le=20)
    backoff_s: float = Field(0.5, gt=0, le=60)
    backoff_max_s: float = Field(8.0, gt=0, le=600)
    max_answer_chars: int = Field(4096, ge=256, le=1_000_000)
    max_tokens: int = Field(16, ge=4, le=1024)  # {"correct": false} is a handful of tokens
    structured_output: Literal["auto", "json_schema", "json_object", "none"] = "auto"
    concurrency: int = Field(8, ge=1, le=256)
    cache: str = "artifacts/judge_cache.jsonl"  # append-only verdicts, shared by every evaluation


class Config(_Section):
    """The whole recipe: one section per component."""

    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    sft: SFTConfig = SFTConfig()
    rollout: RolloutConfig = RolloutConfig()
    critic: CriticConfig = CriticConfig()
    corruption: CorruptionConfig = CorruptionConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    guard: GuardConfig = GuardConfig()
    metrics: MetricsConfig = MetricsConfig()
    eval: EvalConfig = EvalConfig()


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            model = _model_at(Config, e["loc"][:-1])
            allowed = ", ".join(model.model_fields) if model else "?"
            msg = f"unknown key; allowed keys here: {allowed}"
        lines.append(f"  {key}: {msg} (got {e.get('input')!r})" if e["type"] != "extra_forbidden"
                     else f"  {key}: {msg}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], c) with c typed by YAML (numbers, booleans, lists)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `--set` overrides to a raw recipe dict (validation happens afterwards)."""
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {seen[key] + 1}); "
                    "YAML would keep only the last one", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    """yaml.safe_load that refuses duplicate keys."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML recipe (or the defaults when path is None), apply overrides, validate."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            data = load_yaml(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    if overrides:
        source += " + --set " + " ".join(overrides)
        data = apply_overrides(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None
