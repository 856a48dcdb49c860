"""The SFT training loop: mixed report/VQA batches, AdamW with warmup + cosine, the optional auxiliary
lesion-cell loss, a wall-clock budget, a progress bar, and an HF-format save without the aux head."""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medpo_ray.config import SFTConfig
from medpo_ray.data.record import Record
from medpo_ray.sft.aux import LesionCellHead
from medpo_ray.sft.collate import SFTDataError, SFTItem, collate, prepare

STATS_FILE = "sft_stats.json"


def lr_factor(step: int, elapsed: float, cfg: SFTConfig) -> float:
    """Multiplier of cfg.lr: linear warmup over warmup_steps, then cosine to 0 over the rest of the budget.

    Progress is the larger of the step fraction and the time fraction, so a run stopped by
    max_seconds has annealed just like one that ran all its steps.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    by_steps = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, max(by_steps, elapsed / cfg.max_seconds))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class BatchMixer:
    """Endless batches: `report_fraction` of each from report items, the rest from VQA items, each pool
    reshuffled every epoch by a seeded generator (the same seed gives the same batches)."""

    def __init__(self, items: Sequence[SFTItem], batch_size: int, report_fraction: float, seed: int):
        self.rng = np.random.default_rng(seed)
        pools = {"report": [it for it in items if it.task == "report"],
                 "vqa": [it for it in items if it.task != "report"]}
        n_report = round(batch_size * report_fraction)
        if not pools["report"] or not pools["vqa"]:
            n_report = batch_size if pools["report"] else 0
        self.take = {"report": n_report, "vqa": batch_size - n_report}
        self.pools = {k: v for k, v in pools.items() if self.take[k]}
        if not self.pools:
            raise SFTDataError("no training item of the kind sft.report_fraction asks for")
        self.order = {k: np.empty(0, np.int64) for k in self.pools}

    def _draw(self, kind: str, n: int) -> list[SFTItem]:
        out: list[SFTItem] = []
        while len(out) < n:
            if not len(self.order[kind]):
                self.order[kind] = self.rng.permutation(len(self.pools[kind]))
            k = min(n - len(out), len(self.order[kind]))
            out.extend(self.pools[kind][i] for i in self.order[kind][:k])
            self.order[kind] = self.order[kind][k:]
        return out

    def next(self) -> list[SFTItem]:
        """The next batch."""
        return [it for kind in self.pools for it in self._draw(kind, self.take[kind])]


class _Bar:
    """tqdm over steps with loss, aux loss, tokens/s and an ETA that also respects the time budget."""

    def __init__(self, cfg: SFTConfig, enabled: bool):
        from tqdm import tqdm

        self.cfg = cfg
        self.bar = tqdm(total=cfg.steps, desc="sft", unit="step", file=sys.stderr, disable=not enabled,
                        mininterval=1.0, dynamic_ncols=True, bar_format="{l_bar}{bar}| {n}/{total} [{elapsed}{postfix}]")

    def update(self, step: int, elapsed: float, loss: float, aux: float | None, tokens: int) -> None:
        steps_left = (self.cfg.steps - step) * elapsed / max(step, 1)
        eta = min(steps_left, max(0.0, self.cfg.max_seconds - elapsed))
        post = {"loss": f"{loss:.3f}"}
        if aux is not None:
            post["aux"] = f"{aux:.3f}"
        post["tok/s"] = f"{tokens / max(elapsed, 1e-9):.0f}"
        post["ETA"] = f"{eta:.0f}s"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


MAX_RADIUS_LEVELS = 16


def radius_levels(records: Sequence[Record]) -> tuple[float, ...]:
    """The distinct lesion radii (px, ascending) of the records' findings: the classes of the size-level
    target. Refused unless the data has discrete radii (data.radius_levels >= 2), 2..MAX_RADIUS_LEVELS."""
    radii = sorted({float(les["r_px"]) for r in records if r.findings
                    for les in r.findings.get("lesions", ()) if les.get("r_px") is not None})
    if not 2 <= len(radii) <= MAX_RADIUS_LEVELS:
        raise SFTDataError(f"sft.aux_size_levels needs training lesions with 2..{MAX_RADIUS_LEVELS} distinct radii "
                           f"(data made with data.radius_levels >= 2); found {len(radii)}")
    return tuple(radii)


def _ema(old: float | None, new: float, k: float = 0.05) -> float:
    return new if old is None else old + k * (new - old)


def train_sft(model_dir: str | Path, records: Sequence[Record], cfg: SFTConfig, out_dir: str | Path,
              seed: int = 0, dtype: str = "float32", max_length: int = 512, progress: bool = True) -> dict:
    """Fine-tune the model in `model_dir` on `records` and save it (HF format) to `out_dir`; returns stats."""
    import torch

    from medpo_ray.models.loading import load_policy, load_processor

    processor = load_processor(model_dir)
    radii = radius_levels(records) if cfg.aux_lesion_loss and cfg.aux_size_levels else ()
    items, bad = prepare(records, processor, max_length, with_masks=cfg.aux_lesion_loss, radii=radii)
    if not items:
        raise SFTDataError(f"no usable training record ({len(bad)} refused"
                           + (f", first: {bad[0]}" if bad else "") + ")")
    torch.manual_seed(seed)
    model = load_policy(model_dir, dtype).train()
    use_aux = cfg.aux_lesion_loss and cfg.aux_weight > 0 and any(it.mask is not None for it in items)
    head = LesionCellHead(model, seed, n_levels=len(radii)) if use_aux else None
    params = [p for p in model.parameters() if p.requires_grad] + (head.parameters() if head else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    mixer = BatchMixer(items, cfg.batch_size, cfg.report_fraction, seed)
    bar = _Bar(cfg, progress)
    loss_ema = aux_ema = None
    tokens, step, stopped = 0, 0, "steps"
    start = time.perf_counter()
    try:
        while step < cfg.steps:
            elapsed = time.perf_counter() - start
            if elapsed >= cfg.max_seconds:
                stopped = "time"
                break
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, elapsed, cfg)
            batch = collate(mixer.next(), processor)
            # No cell targets for a family without the cell grid (LLaVA); the head is off for it then.
            cell_targets, cell_valid = batch.pop("cell_targets", None), batch.pop("cell_valid", None)
            cell_levels = batch.pop("cell_levels", None)
            out = model(**batch)
            loss = out.loss
            aux = None
            if head is not None and cell_valid is not None and bool(cell_valid.any()):
                aux = head.loss(cell_targets, cell_valid, cell_levels)
                loss = loss + cfg.aux_weight * aux
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            tokens += int(batch["attention_mask"].sum())
            loss_ema = _ema(loss_ema, float(out.loss.detach()))
            aux_ema = _ema(aux_ema, float(aux.detach())) if aux is not None else aux_ema
            bar.update(step, time.perf_counter() - start, loss_ema, aux_ema, tokens)
    finally:
        bar.close()
        if head is not None:
            head.remove()
    seconds = time.perf_counter() - start
    stats = {"steps": step, "stopped_by": stopped, "seconds": round(seconds, 2), "tokens": tokens,
             "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "loss": loss_ema, "aux_loss": aux_ema,
             "aux_lesion_loss": head is not None, "aux_size_levels": list(radii) if head is not None else [],
             "items": len(items),
             "items_by_task": {t: sum(it.task == t for it in items) for t in ("report", "vqa")},
             "bad": len(bad), "bad_examples": [str(b) for b in bad[:5]]}
    save_model(model, processor, out_dir, stats)
    return stats


def save_model(model, processor, out_dir: str | Path, stats: dict) -> Path:
    """HF-format checkpoint (safetensors, config, generation config, processor files) plus the SFT stats."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / STATS_FILE).write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    return out
