"""Turn an LLM critic's raw answer into a checked CriticVerdict, or an abstention with a reason code.

Nothing from the answer reaches a pair unchecked: the text must be one JSON object of the schema's
shape, hold no instruction-like text, and every edit must replace words that really occur exactly
once in y0, within the per-sentence change limit. An abstention's `reason` is "<code>: <detail>";
the code is one of REASONS (a bounded set, safe as a metric label).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from importlib import resources
from itertools import pairwise

import jsonschema

from medpo_ray.critics.base import CriticVerdict, Edit
from medpo_ray.labeler.rules import sentences

REASONS = (
    "empty",  # the answer is blank
    "too_large",  # the answer (or the HTTP body) is over the size limit
    "injection",  # the answer holds instruction-like text ("ignore previous instructions", chat markers)
    "not_json",  # not one JSON object (or nested deeper than MAX_DEPTH, or a number Python refuses)
    "duplicate_keys",  # a JSON object names one key twice (which one counts is up to the parser)
    "schema",  # JSON of the wrong shape
    "critic_abstained",  # the critic itself said it cannot tell
    "no_edits",  # verdict wrong/right without edits
    "too_many_edits",  # more edits than allowed
    "noop_edit",  # an edit whose new text equals its old text
    "old_not_in_y0",  # an edit's old text does not occur in y0
    "old_ambiguous",  # an edit's old text occurs more than once in y0
    "overlapping_edits",  # two edits touch the same characters of y0
    "too_many_changes",  # more changed words in one sentence than allowed
    # transport (openai_critic.py): after the retries are spent
    "timeout", "connection", "http_error", "bad_response", "no_model",
    "unexpected",  # the answer broke a check in a way no rule above names (never an exception: a verdict)
    # reference critic (reference.py)
    "no_findings",  # the record has no structured ground truth to compare with
    "unreadable",  # y0 is not in the grammar the rules can read
    "structural",  # agreeing with the truth needs more than word swaps (a missing sentence, a plural)
    "no_counterfactual",  # y0 agrees but offers no single word to swap
    "balance",  # y0 agrees; its counterfactual's direction is over-used in the data (critics/balance.py)
)

# Instruction-like text has no place in a verdict: a critic that echoes or obeys a prompt injection
# (from y0 or from the record) must not produce a training pair.
_INJECTION = re.compile(
    r"ignore (?:all |any |the )?(?:previous|prior|above|earlier|preceding)|disregard (?:all |any |the )?"
    r"(?:previous|prior|above|instructions)|forget (?:all |your |the )?(?:previous|prior|instructions)|"
    r"new instructions|system prompt|you are now|act as |jailbreak|<\|[a-z_]+\|>|</?(?:system|assistant|user)>|"
    r"\b(?:system|assistant|user)\s*:",
    re.I,
)
_WORD = re.compile(r"\w+")
MAX_DEPTH = 16  # a verdict is 3 levels deep; deeper nesting is garbage (and could exhaust the parser)
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.S)


@dataclass(frozen=True)
class AnswerLimits:
    """Bounds on what a critic may answer (CriticConfig fills them)."""

    max_chars: int = 16384
    max_edits: int = 8
    max_changed_words_per_sentence: int = 3


@lru_cache(maxsize=8)
def load_schema(version: str = "v1") -> dict:
    """The JSON schema of a critic answer, from the versioned prompt folder."""
    return json.loads(resources.files("medpo_ray.critics").joinpath("prompts", version, "schema.json").read_text())


def abstain(code: str, detail: str = "", critic: str = "", raw: str = "") -> CriticVerdict:
    """An abstention whose reason starts with a code from REASONS."""
    assert code in REASONS, code
    return CriticVerdict("abstain", critic=critic, reason=f"{code}: {detail}" if detail else code, raw=raw)


def reason_code(verdict: CriticVerdict) -> str:
    """The bounded code at the front of an abstention's reason."""
    return verdict.reason.split(":", 1)[0]


def changed_words(old: str, new: str) -> int:
    """Words that differ between old and new (a replaced run counts its longer side)."""
    a, b = _WORD.findall(old.lower()), _WORD.findall(new.lower())
    ops = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _DuplicateKey(next(k for k in keys if keys.count(k) > 1))
    return dict(pairs)


def _depth(text: str) -> int:
    """Deepest bracket nesting outside JSON strings (counted before parsing, so nothing recurses on it)."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse(raw: str, schema: dict) -> dict | CriticVerdict:
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if _depth(text) > MAX_DEPTH:
        return abstain("not_json", f"nested deeper than {MAX_DEPTH} levels")
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        return abstain("duplicate_keys", f"key {str(e)[:40]!r} given twice")
    except (ValueError, RecursionError) as e:  # JSONDecodeError, and e.g. an integer of 5,000 digits
        return abstain("not_json", str(e)[:200])
    try:
        jsonschema.validate(obj, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        return abstain("schema", f"{where}: {e.message[:200]}")
    return obj


def _locate(edits: list[dict], y0: str, limits: AnswerLimits) -> tuple[Edit, ...] | CriticVerdict:
    located: list[Edit] = []
    for i, e in enumerate(edits):
        old, new = e["old"], e["new"]
        if old == new:
            return abstain("noop_edit", f"edit {i}: old == new == {old!r}")
        count = y0.count(old)
        if count == 0:
            return abstain("old_not_in_y0", f"edit {i}: {old[:80]!r}")
        if count > 1:
            return abstain("old_ambiguous", f"edit {i}: {old[:80]!r} occurs {count} times")
        located.append(Edit(old, new, y0.index(old), e["kind"]))
    ordered = sorted(located, key=lambda x: x.start)
    for a, b in pairwise(ordered):
        if a.start + len(a.old) > b.start:
            return abstain("overlapping_edits", f"{a.old!r} and {b.old!r}")
    per_sentence: dict[int, int] = {}
    bounds = [s.start for s in sentences(y0)] or [0]
    for e in located:
        first = max((k for k, b in enumerate(bounds) if b <= e.start), default=0)
        per_sentence[first] = per_sentence.get(first, 0) + changed_words(e.old, e.new)
    worst = max(per_sentence.values())
    if worst > limits.max_changed_words_per_sentence:
        return abstain("too_many_changes", f"{worst} changed words in one sentence "
                                           f"(limit {limits.max_changed_words_per_sentence})")
    return tuple(located)


def validate_answer(raw: str, y0: str, limits: AnswerLimits, schema: dict, critic: str = "") -> CriticVerdict:
    """The verdict in `raw` if every check passes, else an abstention naming the first failed check. Never
    raises: whatever the critic sent, the answer is a verdict or an abstention with its reason."""
    keep = raw[:2000] if isinstance(raw, str) else ""
    try:
        return _validate(raw, y0, limits, schema, critic, keep)
    except Exception as e:  # a check that broke on input no rule foresaw: the answer is unusable, the run is not
        return abstain("unexpected", f"{type(e).__name__}: {str(e)[:160]}", critic, keep)


def _validate(raw: str, y0: str, limits: AnswerLimits, schema: dict, critic: str, keep: str) -> CriticVerdict:
    if not isinstance(raw, str):
        return abstain("bad_response", f"answer is {type(raw).__name__}, not text", critic, keep)
    if len(raw) > limits.max_chars:
        return abstain("too_large", f"{len(raw)} characters (limit {limits.max_chars})", critic, keep)
    if not raw.strip():
        return abstain("empty", "", critic, keep)
    hit = _INJECTION.search(raw)
    if hit:
        return abstain("injection", repr(hit.group(0)), critic, keep)
    obj = _parse(raw, schema)
    if isinstance(obj, CriticVerdict):
        return CriticVerdict(obj.verdict, critic=critic, reason=obj.reason, raw=keep)
    if obj["verdict"] == "abstain":
        return abstain("critic_abstained", str(obj.get("reason", ""))[:200], critic, keep)
    if not obj["edits"]:
        return abstain("no_edits", f"verdict {obj['verdict']!r}", critic, keep)
    if len(obj["edits"]) > limits.max_edits:
        return abstain("too_many_edits", f"{len(obj['edits'])} (limit {limits.max_edits})", critic, keep)
    edits = _locate(obj["edits"], y0, limits)
    if isinstance(edits, CriticVerdict):
        return CriticVerdict(edits.verdict, critic=critic, reason=edits.reason, raw=keep)
    return CriticVerdict(obj["verdict"], edits, critic, str(obj.get("reason", ""))[:200], keep)
