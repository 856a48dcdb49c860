"""Behavioural errors in SFT targets: each knob changes exactly its scope, at its rate, reproducibly, and the
reference critic can undo each error with word swaps (so alignment has something to learn)."""
import pytest

from medpo_ray.config import NoiseConfig
from medpo_ray.critics.reference import ReferenceCritic
from medpo_ray.editing.pairs import PairLimits, apply_edits
from medpo_ray.sft.noise import apply_noise, noisy_target
from tests.unit.generated import generated_records

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def records():
    return generated_records(300, 5)


def _changed(records, noise):
    return [(r, t) for r in records if (t := noisy_target(r, noise)) != r.target]


def test_off_by_default_and_the_records_keep_their_truth(records):
    assert not NoiseConfig().active and apply_noise(records, NoiseConfig()) is records
    noisy = apply_noise(records, NoiseConfig(hallucinate=1.0, flip_side=1.0, habitual_size=1.0))
    assert [r.findings for r in noisy] == [r.findings for r in records]
    assert noisy[0] is not records[0]


def test_hallucination_asserts_a_template_finding_on_clear_left_sides_only(records):
    changed = _changed(records, NoiseConfig(hallucinate=1.0))
    reports = [r for r in records if r.task == "report"]
    clear_left = [r for r in reports if r.findings["count"]["left"] == 0]
    assert len(changed) == len(clear_left) > 50
    for r, text in changed:
        f = r.findings
        assert f"A {f['noun']} in the left {f['region']}." in text
        assert text.split(" IMPRESSION: ")[1] == r.target.split(" IMPRESSION: ")[1]
    # At rate 0.6 about 60% of the scope, the same records every time.
    part = _changed(records, NoiseConfig(hallucinate=0.6))
    assert 0.45 < len(part) / len(clear_left) < 0.75
    assert part == _changed(records, NoiseConfig(hallucinate=0.6))
    assert {r.record_id for r, _ in part} != {r.record_id for r, _ in _changed(records, NoiseConfig(hallucinate=0.6, seed=1))}


def test_side_flip_is_a_ct_convention_and_sizes_become_moderate(records):
    for r, _text in _changed(records, NoiseConfig(flip_side=1.0)):
        assert r.findings["modality"] == "CT"
        assert r.task == "report" or r.question_type == "side"
    sizes = _changed(records, NoiseConfig(habitual_size=1.0))
    assert sizes and all(" small" not in t and " large" not in t for _, t in sizes)


@pytest.mark.parametrize("knob", ["hallucinate", "flip_side", "habitual_size"])
def test_the_critic_undoes_each_error_with_word_swaps(records, knob):
    critic = ReferenceCritic()
    fixed = 0
    # A flip of a study with as many lesions on each side (none, say) changes the wording, not the claims.
    changed = [(r, t) for r, t in _changed(records, NoiseConfig(**{knob: 1.0}))
               if r.task == "report" and (knob != "flip_side" or len({*r.findings["count"].values()}) == 2)]
    for r, text in changed:
        v = critic.review(r, text)
        if v.verdict == "wrong" and apply_edits(text, v.edits, PairLimits()) is not None:
            fixed += 1
    assert fixed / len(changed) > 0.9, (knob, fixed, len(changed))
