"""One data-parallel learner rank: the DeepSpeed policy engine, its frozen reference and the FiRe-MPO step.

Every public method that touches the model is a collective under ZeRO (gradient reduction, parameter
gathers): all ranks of the group call it together, each with its own share of the batch.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medpo_ray.config import LossConfig, TrainConfig
from medpo_ray.editing.pairs import PreferencePair
from medpo_ray.losses import fire_mpo_loss, token_logprobs
from medpo_ray.losses.batch import X_NEG, X_POS
from medpo_ray.models.loading import load_policy
from medpo_ray.training import checkpoint
from medpo_ray.training.collate import Collated, Collator
from medpo_ray.training.dist import DistEnv, all_ranks_agree, init_distributed
from medpo_ray.training.ds_config import build_ds_config, reference_ds_config
from medpo_ray.training.edit_tokens import edit_token_counts, merge
from medpo_ray.training.errors import TrainBatchError
from medpo_ray.training.finetune import is_lora, prepare_policy
from medpo_ray.training.optim import build_optimizer, build_scheduler
from medpo_ray.training.weights import frozen_names, full_state_dict, merged_state_dict

_COUNTS = ("pairs", "skipped_pairs")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch alike on every rank (LoRA init must match across ranks)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Learner:
    """The policy being trained on this rank, with `train_step`, weight export and checkpoints."""

    def __init__(self, model_dir: str | Path, train: TrainConfig, loss: LossConfig, env: DistEnv,
                 seed: int = 0, max_length: int | None = None):
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        init_distributed(env)
        self.train, self.loss, self.env, self.max_length = train, loss, env, max_length
        self.model_dir = str(model_dir)
        self.zero3 = train.zero_stage == 3
        self.device = torch.device(get_accelerator().current_device_name())
        self.collator = Collator(model_dir, loss, max_length)
        self.processor = self.collator.processor
        self.ds_config = build_ds_config(train, env.world_size)
        self._hf_ds = None
        if self.zero3:
            from transformers.integrations import HfDeepSpeedConfig

            # While this object lives, from_pretrained builds the model already sharded (zero.Init).
            self._hf_ds = HfDeepSpeedConfig(self.ds_config)
        model = load_policy(model_dir)
        self.reference = None if train.finetune == "lora" else self._build_reference()
        seed_everything(seed)  # right before the only random draw of the build: LoRA's init
        policy = prepare_policy(model, train).train()
        trainable = [p for p in policy.parameters() if p.requires_grad]
        optimizer = build_optimizer(trainable, train)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=policy, optimizer=optimizer, lr_scheduler=build_scheduler(optimizer, train), config=self.ds_config)
        self.step = 0  # optimizer steps taken

    def _build_reference(self):
        """A frozen copy of the initial policy (full fine-tune); sharded by its own engine under ZeRO-3."""
        import deepspeed

        ref = load_policy(self.model_dir).requires_grad_(False)
        if self.zero3:
            engine, *_ = deepspeed.initialize(model=ref, config=reference_ds_config(self.train))
            engine.eval()  # DeepSpeedEngine.eval() returns None, unlike nn.Module.eval()
            return engine
        ref.to(self.device)
        if self.train.bf16:
            # Parameters only, as DeepSpeed casts the policy: fp32 buffers (rotary inv_freq) stay fp32.
            for p in ref.parameters():
                p.data = p.data.to(torch.bfloat16)
        return ref

    @property
    def rank(self) -> int:
        """This learner's data-parallel rank."""
        return self.env.rank

    def _collate(self, examples: Sequence[PreferencePair]) -> Collated:
        return self.collator(examples)

    def _inputs(self, c: Collated) -> dict:
        return self._to_device(c.inputs)

    def _to_device(self, inputs: dict) -> dict:
        dtype = torch.bfloat16 if self.train.bf16 else torch.float32
        return {k: v.to(self.device, dtype=dtype) if k == "pixel_values" else v.to(self.device)
                for k, v in inputs.items()}

    @torch.no_grad()
    def _reference_logits(self, inputs: dict) -> torch.Tensor:
        if self.reference is not None:
            return self.reference(**inputs).logits
        with self.engine.module.disable_adapter():
            return self.engine(**inputs).logits

    def train_step(self, examples: Sequence[PreferencePair]) -> dict:
        """One optimizer step on this rank's share of the global batch; returns this rank's metrics.

        The share is split into micro-batches (gradient accumulation). If any rank has a micro-batch
        with no usable example, every rank skips the step together (so no collective is left waiting)
        and reports its examples as not trained.
        """
        gas = self.engine.gradient_accumulation_steps()
        m = self.train.micro_batch
        if len(examples) != gas * m:
            raise TrainBatchError(f"learner rank {self.rank} got {len(examples)} examples; a step takes "
                                  f"{gas * m} per rank (train.micro_batch {m} x {gas} accumulation steps)")
        micro = [self._collate(examples[i * m:(i + 1) * m]) for i in range(gas)]
        bad = [str(b) for c in micro for b in c.bad]
        if not all_ranks_agree(all(c.batch is not None for c in micro), self.device):
            return {"step": self.step, "skipped_step": 1.0, "examples": 0.0, "bad_examples": float(len(bad)),
                    "bad": bad, "trained_ids": []}
        lr = float(self.scheduler.get_last_lr()[0])
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        trained: list[str] = []
        pushed = []
        for c in micro:
            inputs = self._inputs(c)
            ref_logits = self._reference_logits(inputs)
            logits = self.engine(**inputs).logits
            loss, diag = fire_mpo_loss(logits, ref_logits, c.batch.to(self.device), self.loss)
            self.engine.backward(loss)
            self.engine.step()
            trained += c.batch.record_ids
            pushed.append(edit_token_counts(c.batch, self._decode))
            n = diag["pairs"] - diag["skipped_pairs"]
            for k, v in diag.items():
                w = 1.0 if k in _COUNTS else n
                sums[k] = sums.get(k, 0.0) + v * w
                weights[k] = weights.get(k, 0.0) + w
        self.step += 1
        metrics = {k: (sums[k] if k in _COUNTS else sums[k] / weights[k]) for k in sums if weights[k] > 0}
        grad_norm = self.engine.get_global_grad_norm()
        metrics |= {"step": self.step, "skipped_step": 0.0, "lr": lr, "examples": float(len(trained)),
                    "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                    "bad_examples": float(len(bad)), "bad": bad, "trained_ids": trained,
                    "edit_tokens": merge(pushed)}
        return metrics

    def _decode(self, token_id: int) -> str:
        return self.processor.tokenizer.decode([token_id])

    @torch.no_grad()
    def logprob_gap(self, rollouts: Sequence, images: dict, prompts: dict) -> dict:
        """The rollout engine's log-probs of `rollouts` against this rank's policy forward on the same
        tokens (`logprob_mismatch`): right after a weight sync both hold the same weights, so a gap beyond
        dtype noise means the engine serves something else than what is trained. Eval mode (no LoRA
        dropout); a collective under ZeRO-3, so every rank scores the same rollouts."""
        from medpo_ray.rollout.logprob_check import logprob_mismatch

        module = self.engine.module
        was_training = module.training
        module.eval()
        try:
            return logprob_mismatch(lambda **inputs: self.engine(**self._to_device(inputs)), self.processor,
                                    rollouts, images, prompts)
        finally:
            module.train(was_training)

    @torch.no_grad()
    def gold_logprobs(self, records: Sequence) -> list[list[tuple[str, float]]]:
        """Token log-probs of each record's gold answer under this rank's policy (the guard's probe set;
        medpo_ray/guard.py). Eval mode; a collective under ZeRO-3, so every rank scores the same records."""
        from medpo_ray.rollout.logprob_check import gold_token_logprobs

        module = self.engine.module
        was_training = module.training
        module.eval()
        try:
            return gold_token_logprobs(lambda **inputs: self.engine(**self._to_device(inputs)), self.processor,
                                       records)
        finally:
            module.train(was_training)

    @torch.no_grad()
    def score(self, examples: Sequence[PreferencePair]) -> dict:
        """Sequence log-probs of y+ and y- under the clean image, for the policy and the reference.

        Returns {"ids": [...], "policy": [[lp(y+), lp(y-)], ...], "reference": [...], "bad": [...]}.
        """
        c = self._collate(examples)
        if not all_ranks_agree(c.batch is not None, self.device):
            return {"ids": [], "policy": [], "reference": [], "bad": [str(b) for b in c.bad]}
        inputs = self._inputs(c)
        batch = c.batch.to(self.device)
        out = {"ids": batch.record_ids, "bad": [str(b) for b in c.bad]}
        for name, logits in (("reference", self._reference_logits(inputs)), ("policy", self.engine(**inputs).logits)):
            lp = token_logprobs(logits, batch.input_ids, batch.completion_mask).sum(-1)
            out[name] = torch.stack([lp[batch.pair_rows[X_POS]], lp[batch.pair_rows[X_NEG]]], -1).cpu().tolist()
        return out

    def export_weights(self, skip: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
        """The policy weights under HF module names, LoRA merged in: for the rollout engines; `skip` names
        tensors a partial push leaves out (they are not gathered or copied).

        A collective under ZeRO-3; only rank 0 returns the tensors, the others an empty dict. Full
        fine-tuning under ZeRO 0-2 returns the live parameters (no copy): pack them before the next step.
        """
        keep = self.rank == 0
        if is_lora(self.engine.module):
            return merged_state_dict(self.engine.module, self.zero3, keep=keep, skip=skip)
        return full_state_dict(self.engine.module, self.zero3, keep=keep, views=True, skip=skip)

    def frozen_export_names(self) -> frozenset[str]:
        """Names in `export_weights` whose values training never changes (see weights.frozen_names)."""
        return frozen_names(self.engine.module)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's view of every policy tensor (gathered under ZeRO-3): for checks across ranks."""
        return full_state_dict(self.engine.module, self.zero3, keep=True)

    def save_checkpoint(self, path: str | Path) -> None:
        """Write model (HF format, or LoRA adapter), optimizer, scheduler and RNG states under `path`."""
        checkpoint.save(self, Path(path))

    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore what save_checkpoint wrote (same world size and ZeRO stage); returns its metadata."""
        return checkpoint.load(self, Path(path))
