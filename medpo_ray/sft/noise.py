"""Behavioural errors in the SFT targets, as real radiology training text carries them (`sft.noise.*`).

A clean warm start of a tiny model keeps only perception errors, which no preference pair can fix; the
errors FiRe-MPO is about are behavioural: a finding asserted whatever the image shows, a side convention,
a habitual size. Rollouts are greedy, so an error the SFT text makes at random below 50% vanishes from
the argmax: each knob is the share of training targets *within a fixed scope* that carry the error, so a
rate above 0.5 makes it the model's habit in that scope, as in a real corpus where one template or one
site's convention repeats. Only the SFT text changes: the records' structured findings, which the critic
and the evaluation read, stay true.

Scopes (each a single-word change the reference critic can undo, so alignment has something to fix):
- hallucinate: the clear LEFT side's findings sentence becomes the template "A N in the left R."
  (a template sentence that asserts a finding on a normal side);
- flip_side: CT studies swap right and left in the report and in side answers (image-side convention);
- habitual_size: every size word of the report, and size answers, become "moderate" (a habitual size).
Each record's draw is a stable hash of (noise seed, knob, record id): the same records carry the errors
in every run. An omitted finding is not offered: undoing one needs an impression clause inserted, which
no word swap does (the critic abstains), so it would teach nothing here.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from medpo_ray.config import NoiseConfig
from medpo_ray.data.record import Record

_SIDE_WORD = re.compile(r"\b(right|left)\b", re.I)
_SIZE_WORD = re.compile(r"\b(small|large)\b", re.I)
_SENTENCE = re.compile(r"[^.]*\.")


def _draw(seed: int, knob: str, record_id: str) -> float:
    h = hashlib.sha256(f"{seed}\x1f{knob}\x1f{record_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def _swap_case(m: re.Match, word: str) -> str:
    return word.capitalize() if m.group(0)[0].isupper() else word


def _flip(text: str) -> str:
    other = {"right": "left", "left": "right"}
    return _SIDE_WORD.sub(lambda m: _swap_case(m, other[m.group(0).lower()]), text)


def _moderate(text: str) -> str:
    return _SIZE_WORD.sub(lambda m: _swap_case(m, "moderate"), text)


def _hallucinate(report: str, findings: dict) -> str:
    # The clear left side's findings sentence -> the bare positive template (the impression is left as it
    # was: a template pasted into the findings, as dictation templates do).
    head, sep, impression = report.partition(" IMPRESSION: ")
    if not head.startswith("FINDINGS: ") or not sep:
        return report
    sentences = [s.strip() for s in _SENTENCE.findall(head.removeprefix("FINDINGS: "))]
    out = []
    for s in sentences:
        clear_left = re.search(r"\bleft\b", s) and re.match(r"(No|There is no) ", s)
        out.append(f"A {findings['noun']} in the left {findings['region']}." if clear_left else s)
    return "FINDINGS: " + " ".join(out) + sep + impression


def noisy_target(record: Record, noise: NoiseConfig) -> str:
    """The SFT target of `record` with the configured behavioural errors (the record itself is unchanged)."""
    f = record.findings or {}
    text = record.target
    if "noun" not in f:
        return text

    def on(knob: str) -> bool:
        return _draw(noise.seed, knob, record.record_id) < getattr(noise, knob)

    if record.task == "report":
        if on("hallucinate") and f.get("count", {}).get("left", 1) == 0:
            text = _hallucinate(text, f)
        if f.get("modality") == "CT" and on("flip_side"):
            text = _flip(text)
        if on("habitual_size"):
            text = _moderate(text)
    elif record.question_type == "side" and f.get("modality") == "CT" and on("flip_side"):
        text = _flip(text)
    elif record.question_type == "size" and text.lower() in ("small", "large") and on("habitual_size"):
        text = _moderate(text)
    return text


def apply_noise(records: list[Record], noise: NoiseConfig) -> list[Record]:
    """The records with noisy SFT targets (unchanged when every rate is 0)."""
    if not noise.active:
        return records
    return [replace(r, target=noisy_target(r, noise)) for r in records]
