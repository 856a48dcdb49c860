"""The transformers side of the log-prob check, against a token-by-token reference forward."""
import pytest
import torch

from medpo_ray.models.inputs import build_batch, encode_completion, open_image
from medpo_ray.rollout.engine import Rollout
from medpo_ray.rollout.logprob_check import completion_logprobs, logprob_mismatch
from tests.unit.models.conftest import png

pytestmark = pytest.mark.unit

PROMPT = "Write the report."


def stepwise_reference(model, processor, image, prompt, completion):
    """log p(c_t | prompt, c_<t) with one forward per token, reading only the last position."""
    out = []
    for t in range(len(completion)):
        b = build_batch(processor, [image], [prompt], [completion[:t]])
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           mm_token_type_ids=b["mm_token_type_ids"], pixel_values=b["pixel_values"],
                           image_grid_thw=b["image_grid_thw"]).logits
        out.append(torch.log_softmax(logits[0, -1].float(), -1)[completion[t]].item())
    return out


def test_padded_batch_matches_stepwise_forward(tiny_policy):
    model, processor = tiny_policy
    images = [open_image(png(3)), open_image(png(4))]
    comps = [encode_completion(processor, "No nodule in the left lung."), encode_completion(processor, "yes")]
    got = completion_logprobs(model, build_batch(processor, images, [PROMPT] * 2, comps))
    for img, comp, row in zip(images, comps, got, strict=True):
        ref = stepwise_reference(model, processor, img, PROMPT, comp)
        assert len(row) == len(comp)
        assert max(abs(a - b) for a, b in zip(row, ref, strict=True)) < 1e-5


def rollout(record_id, prompt_ids, ids, lps):
    return Rollout(record_id=record_id, sample=0, prompt_token_ids=prompt_ids, token_ids=ids, text="",
                   logprobs=lps, finish_reason="length", policy_version=0)


def test_mismatch_is_zero_for_matching_logprobs_and_sees_a_gap(tiny_policy):
    model, processor = tiny_policy
    images, prompts = {"a": png(5), "b": png(6)}, {"a": PROMPT, "b": "Is there a nodule?"}
    comps = {"a": encode_completion(processor, "A small nodule."), "b": encode_completion(processor, "no")}
    rows = {}
    for k in "ab":
        b = build_batch(processor, [open_image(images[k])], [prompts[k]], [comps[k]])
        rows[k] = (b["input_ids"][0, : b["prompt_lengths"][0]].tolist(),
                   stepwise_reference(model, processor, open_image(images[k]), prompts[k], comps[k]))
    exact = [rollout(k, rows[k][0], comps[k], rows[k][1]) for k in "ab"]
    same = logprob_mismatch(model, processor, exact, images, prompts)
    assert same["logprob_max_abs_diff"] < 1e-5 and same["prompt_mismatches"] == 0
    assert same["tokens"] == len(comps["a"]) + len(comps["b"])

    off = [rollout("a", rows["a"][0][:-1], comps["a"], [x + 0.5 for x in rows["a"][1]])]
    gap = logprob_mismatch(model, processor, off, images, prompts)
    assert gap["logprob_max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    assert gap["prompt_mismatches"] == 1
