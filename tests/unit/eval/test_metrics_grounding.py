"""Grounding sensitivity: the drop arithmetic by hand, the finding-span token mask, the corrupted views
(real inpainting and control placement), and batched span log-likelihoods against one-at-a-time forwards."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from medpo_ray.config import CorruptionConfig
from medpo_ray.data.record import Record
from medpo_ray.eval.grounding import corrupted_views, finding_char_spans, span_loglik, token_mask
from medpo_ray.eval.metrics import grounding_summary, mean_std
from tests.unit.models.conftest import png, tiny_model_dir  # noqa: F401  (session fixture)

pytestmark = pytest.mark.unit
REPORT = ("FINDINGS: No lesion in the right hemifield. There is a 43 mm large lesion in the left hemifield. "
          "IMPRESSION: One large left-sided lesion.")


def test_drops_and_paired_standard_error_by_hand():
    # Lesion drops 1.0 and 0.0; control drops 0.1 and 0.2; paired differences 0.9 and -0.2.
    got = grounding_summary([(-1.0, -2.0, -1.1), (-0.5, -0.5, -0.7)])
    assert got["drop_lesion"] == pytest.approx(0.5)
    assert got["drop_control"] == pytest.approx(0.15)
    assert got["difference"] == pytest.approx(0.35)
    assert got["difference_se"] == pytest.approx(0.55)
    assert got["n"] == 2
    assert grounding_summary([])["difference"] is None
    assert grounding_summary([(-1.0, -1.5, -1.0)])["difference_se"] is None


def test_mean_std_skips_missing_values():
    assert mean_std([1.0, None, 3.0]) == (2.0, pytest.approx(2 ** 0.5), 2)
    assert mean_std([None]) == (None, None, 0)
    assert mean_std([0.4]) == (0.4, 0.0, 1)


def test_only_present_findings_sentences_before_the_impression_are_scored():
    spans = finding_char_spans(REPORT)
    assert [REPORT[a:b] for a, b in spans] == ["There is a 43 mm large lesion in the left hemifield."]
    assert finding_char_spans("FINDINGS: No lesion in the right hemifield. No lesion in the left hemifield.") == []
    assert token_mask([(0, 8), (40, 45), (95, 97), (100, 110)], [(44, 96)]) == [0, 1, 1, 0]


def disk_of(cx: int) -> np.ndarray:
    yy, xx = np.mgrid[:112, :112]
    return (yy - 50) ** 2 + (xx - cx) ** 2 <= 36


def _lesion_record(rid: str, cx: int) -> Record:
    # Textured background: inpainting a flat area would give back the same flat pixels.
    img = np.random.default_rng(0).integers(60, 120, (112, 112)).astype(np.uint8)
    mask = np.zeros_like(img)
    disk = disk_of(cx)
    img[disk], mask[disk] = 220, 255

    def enc(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()

    findings = {"noun": "lesion", "region": "hemifield", "lesions": [{"side": "left", "diameter_mm": 43}]}
    return Record(rid, "report", enc(img), "Write the report.", REPORT, study_id=rid, findings=findings,
                  lesion_mask=enc(mask))


def test_corrupted_views_remove_the_lesion_and_corrupt_a_same_size_control_area():
    rec = _lesion_record("s1", 80)
    no_mask = Record("s2", "report", rec.image, rec.prompt, REPORT, study_id="s2", findings=rec.findings)
    views, bad = corrupted_views([rec, no_mask], CorruptionConfig())
    assert [b.record_id for b in bad] == ["s2"] and len(views) == 1
    clean = np.asarray(Image.open(io.BytesIO(rec.image)))
    lesion = np.asarray(Image.open(io.BytesIO(views[0][1])).convert("L"))
    control = np.asarray(Image.open(io.BytesIO(views[0][2])).convert("L"))
    assert clean[50, 80] == 220 and lesion[disk_of(80)].max() < 150  # inpainted from the grey surroundings
    assert (control[disk_of(80)] == 220).all()  # the control leaves the lesion alone ...
    assert (control != clean).any()  # ... and changes pixels elsewhere


def test_batched_span_loglik_equals_single_unpadded_forwards(tiny_model_dir):  # noqa: F811
    from medpo_ray.models.inputs import build_batch, model_inputs
    from medpo_ray.models.loading import load_policy, load_processor

    model, processor = load_policy(tiny_model_dir), load_processor(tiny_model_dir)
    texts = [REPORT, "FINDINGS: Two nodules in the right lung. No nodule in the left lung.", "No nodule."]
    images = [png(1), png(2), png(3)]
    prompts = ["Write the report.", "Describe the image in detail please.", "Report."]
    got = span_loglik(model, processor, images, prompts, texts, batch_size=3)
    assert got[2] is None  # nothing present to score
    for i in (0, 1):
        enc = processor.tokenizer(texts[i], add_special_tokens=False, return_offsets_mapping=True)
        mask = token_mask(enc["offset_mapping"], finding_char_spans(texts[i]))
        batch = build_batch(processor, [Image.open(io.BytesIO(images[i])).convert("RGB")], [prompts[i]],
                            [enc["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(**model_inputs(batch)).logits[0].double(), dim=-1)
        start = batch["prompt_lengths"][0]
        ref = [logp[start + j - 1, tok].item() for j, tok in enumerate(enc["input_ids"]) if mask[j]]
        assert len(ref) > 3
        assert got[i] == pytest.approx(sum(ref) / len(ref), abs=1e-4)
