"""Real training inputs for the learner tests: the tiny policy from the model factory, and minimal-edit
pairs on embedded studies (y+ = the study's report, y- = the same with one side flipped in the
impression, x~ = the lesion inpainted)."""
from __future__ import annotations

import re
from pathlib import Path

from medpo_ray.editing.pairs import PreferencePair

_SIDE = re.compile(r"\b(right|left)-sided\b")


def build_tiny_model(out: Path) -> Path:
    """`medpo-ray model tiny --out OUT`: the embedded random-init Qwen2-VL."""
    from driver.cli import main

    assert main(["model", "tiny", "--out", str(out)]) == 0
    return out


def flip_side(report: str) -> str | None:
    """The report with the first side claim of its impression flipped, or None if it makes none."""
    head, sep, impression = report.partition("IMPRESSION:")
    m = _SIDE.search(impression)
    if not sep or m is None:
        return None
    other = "left" if m.group(1) == "right" else "right"
    return head + sep + impression[:m.start(1)] + other + impression[m.end(1):]


def make_examples(n: int, size: int = 112, start: int = 0, with_corrupt: bool = True) -> list[PreferencePair]:
    """n branch-B style pairs from embedded studies that report a lesion (deterministic)."""
    from medpo_ray.corruption.codec import corrupt_png
    from medpo_ray.data.lesions import LesionParams
    from medpo_ray.data.reports import REPORT_PROMPT
    from medpo_ray.data.synth import generate_study
    from medpo_ray.editing.diff import word_diff

    params = LesionParams.from_difficulty(0.5, size)
    out, index = [], start
    while len(out) < n:
        row, _ = generate_study(index, 0, size, params)
        index += 1
        rejected = flip_side(row["report"])
        if rejected is None:
            continue
        spans_minus, spans_plus = word_diff(rejected, row["report"])
        corrupt = None
        if with_corrupt:
            corrupt, _ = corrupt_png(row["image"], mask_png=row["lesion_mask"], mode="inpaint", key=row["study_id"])
        out.append(PreferencePair(row["study_id"], row["report"], rejected, tuple(spans_plus), tuple(spans_minus),
                                  "B", "test", "", 0, prompt=REPORT_PROMPT, image=row["image"], corrupt_image=corrupt))
    return out
