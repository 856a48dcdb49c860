"""Grounding sensitivity: how much the policy's belief in the true findings depends on the lesion pixels.

For each held-out report study with lesions, the ground-truth report is scored (transformers forward,
fp32) under the clean image, the lesion-inpainted image and the same corruption on a same-area
lesion-free control region. Only the tokens of the FINDINGS sentences that state a present finding
count: the IMPRESSION repeats them and is predictable from the text before it, not from the image.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from medpo_ray.data.record import BadRecord, Record
from medpo_ray.labeler import label

_IMPRESSION = "IMPRESSION:"


def finding_char_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges of the sentences before IMPRESSION that state a present finding."""
    cut = text.find(_IMPRESSION)
    cut = len(text) if cut < 0 else cut
    spans = {(c.sentence.start, c.sentence.end) for c in label(text)
             if c.status == "present" and c.sentence.start < cut}
    return sorted(spans)


def token_mask(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """1 for each token whose characters overlap one of the spans."""
    return [int(any(a < e and b > s for s, e in spans)) for a, b in offsets]


def _studies(records: Sequence[Record], limit: int) -> list[Record]:
    # One report record per study with at least one lesion, in study order, so runs compare the same set.
    seen, out = set(), []
    for r in sorted(records, key=lambda r: r.record_id):
        f = r.findings or {}
        if r.task == "report" and f.get("lesions") and r.lesion_mask is not None and r.study_id not in seen:
            seen.add(r.study_id)
            out.append(r)
    return out[:limit]


def corrupted_views(records: Sequence[Record], cfg) -> tuple[list[tuple[Record, bytes, bytes]], list[BadRecord]]:
    """(record, lesion-corrupted PNG, control-corrupted PNG) for records where both corruptions apply."""
    from medpo_ray.corruption.codec import corrupt_png
    from medpo_ray.corruption.errors import CorruptionError

    views, bad = [], []
    for r in records:
        try:
            lesion, note = corrupt_png(r.image, mask_png=r.lesion_mask, boxes=r.boxes, key=r.record_id, cfg=cfg)
            control, cnote = corrupt_png(r.image, mask_png=r.lesion_mask, boxes=r.boxes, key=r.record_id, cfg=cfg,
                                         control=True)
        except CorruptionError as e:
            bad.append(BadRecord(r.record_id, "image", str(e), source="grounding"))
            continue
        if cnote.get("region") != "control" or note.get("region") == "whole":
            bad.append(BadRecord(r.record_id, "lesion_mask", cnote.get("reason", "no lesion region"),
                                 source="grounding"))
            continue
        views.append((r, lesion, control))
    return views, bad


def span_loglik(model, processor, images: Sequence, prompts: Sequence[str], texts: Sequence[str],
                batch_size: int = 12) -> list[float | None]:
    """Mean per-token log-likelihood of each text's finding-span tokens given (image, prompt); None if no span."""
    import torch

    from medpo_ray.models.inputs import build_batch, model_inputs, open_image

    out: list[float | None] = []
    for lo in range(0, len(texts), batch_size):
        chunk = range(lo, min(lo + batch_size, len(texts)))
        comps, masks = [], []
        for i in chunk:
            enc = processor.tokenizer(texts[i], add_special_tokens=False, split_special_tokens=True,
                                      return_offsets_mapping=True)
            comps.append(enc["input_ids"])
            masks.append(token_mask(enc["offset_mapping"], finding_char_spans(texts[i])))
        batch = build_batch(processor, [open_image(images[i]) for i in chunk], [prompts[i] for i in chunk], comps)
        with torch.no_grad():
            logits = model(**model_inputs(batch)).logits
        for row, (ids, mask) in enumerate(zip(comps, masks, strict=True)):
            start = batch["prompt_lengths"][row]
            keep = [j for j, m in enumerate(mask) if m]
            if not keep:
                out.append(None)
                continue
            # Logits at position p predict token p + 1; gather the rows first, then the fp32 log_softmax.
            rows = logits[row, [start + j - 1 for j in keep]].float()
            lp = torch.log_softmax(rows, dim=-1)[torch.arange(len(keep)), torch.tensor([ids[j] for j in keep])]
            out.append(float(lp.mean()))
    return out


def grounding_rows(model_dir, records: Sequence[Record], corruption_cfg, limit: int = 100,
                   batch_size: int = 12) -> tuple[list[tuple[float, float, float]], list[BadRecord]]:
    """(clean, lesion, control) finding log-likelihoods for up to `limit` studies with lesions."""
    import torch

    from medpo_ray.models.loading import load_policy, load_processor

    t0 = time.perf_counter()
    views, bad = corrupted_views(_studies(records, limit), corruption_cfg)
    if not views:
        return [], bad
    model, processor = load_policy(model_dir, "float32"), load_processor(model_dir)
    prompts = [r.prompt for r, _, _ in views]
    texts = [r.target for r, _, _ in views]
    scores = []
    with torch.inference_mode():
        for name, idx in (("clean", None), ("lesion", 1), ("control", 2)):
            images = [v[0].image if idx is None else v[idx] for v in views]
            scores.append(span_loglik(model, processor, images, prompts, texts, batch_size))
            print(f"grounding: {name} images scored, {len(views)} studies, {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr, flush=True)
    rows = []
    for (r, _, _), c, les, ctl in zip(views, *scores, strict=True):
        if c is None or les is None or ctl is None:
            bad.append(BadRecord(r.record_id, "target", "no finding sentence to score", source="grounding"))
            continue
        rows.append((c, les, ctl))
    return rows, bad
