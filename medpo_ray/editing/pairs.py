"""From a policy answer y0 and a critic verdict to a validated minimal-edit preference pair.

SPAN_EDITOR.md steps 3-4: apply the critic's edits to y0 (each at its `start`, or at the unique
occurrence of `old`), orient the pair by branch (A: y0 was wrong, y- = y0; B: y0 was right, y+ = y0),
diff y- against y+ for the character-span masks, and reject, with a counted reason, anything that is
not a small, real, checkable edit. No pair is ever built from text that was not checked against y0.
"""
from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from difflib import SequenceMatcher
from typing import Literal

from medpo_ray.critics.answer import REASONS as CRITIC_REASONS
from medpo_ray.critics.base import CriticVerdict, Edit
from medpo_ray.data.record import Record
from medpo_ray.editing.diff import tokenize, word_diff
from medpo_ray.editing.token_masks import Span, token_mask_for_text
from medpo_ray.streaming.audit import editor_row
from medpo_ray.streaming.outcome import StageOutcome

REASONS = (
    "abstain",  # the critic gave no edit and no known reason code (else the rejection is that code, below)
    "no_edits",  # verdict wrong/right but no edit to apply
    "bad_text",  # y0 or an edit holds something other than text (non-str, control characters)
    "empty_text",  # y0 or the edited text is empty or blank
    "too_long",  # y0, an edit or the edited text is over the length limit
    "edit_not_found",  # `old` is not in y0 (or not at the given `start`)
    "edit_ambiguous",  # `old` occurs more than once in y0 and no `start` says which
    "overlapping_edits",  # two edits touch the same characters of y0
    "no_change",  # the edits leave the text as it was (y+ == y-)
    "empty_mask",  # one side's spans cover no token (or no character, without a tokenizer)
    "too_many_edited_words",  # more than max_edit_fraction of the words changed
    "low_similarity",  # word-level similarity of y+ and y- under min_similarity
    "duplicate",  # the same (record id, y+, y-) was built before
    "token_shape",  # branch B: the counterfactual's edited words take another number of tokens than y0's
    *CRITIC_REASONS,  # the critic's abstentions keep their own codes (critics/answer.py)
)
Reason = str  # one of REASONS
_WORD = re.compile(r"\w")
# Tabs, newlines and ordinary text are fine; other control characters never come from a real answer.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class PairLimits:
    """Validation limits of SPAN_EDITOR.md step 4 (defaults are the spec's)."""

    max_edit_fraction: float = 0.5
    min_similarity: float = 0.5
    # Answers this short (closed VQA: "yes", "left lung") are wholly the clause being edited, so the
    # fraction and similarity filters, meant for reports, would reject every one of them.
    short_answer_words: int = 4
    max_chars: int = 8192
    raw_chars: int = 2000  # the critic's raw output is kept this long, for audit


@dataclass(frozen=True)
class PreferencePair:
    """The pipeline's one pair type, from the span editor to the loss: a minimal-edit pair with
    character-span masks on both sides (token masks come at collate), the prompt and clean image x it
    answers, and, once the corruption stage has made it, the lesion-corrupted image x~ (None: no x~, the
    visual term is off for this pair). The span editor fills the text side and the prompt, the corruption
    stage adds x and x~. `record_id` is the sample's id from prompt to loss."""

    record_id: str
    y_plus: str
    y_minus: str
    spans_plus: tuple[Span, ...]
    spans_minus: tuple[Span, ...]
    branch: Literal["A", "B"]
    critic: str
    raw: str
    policy_version: int
    edit_kinds: tuple[str, ...] = ()
    counterfactual: str = ""  # branch B: the critic's balance key of the swap, when it gives one
    prompt: str = ""
    image: bytes = b""
    corrupt_image: bytes | None = None

    @property
    def kind(self) -> str:
        """The pair's label in metrics.jsonl: its branch, then the edit kinds (A) or the counterfactual's
        balance key (B, when the critic gives one): "A:laterality", "B:presence:no>a"."""
        if self.branch == "B" and self.counterfactual:
            return f"B:{self.counterfactual}"
        return f"{self.branch}:{'+'.join(sorted(set(self.edit_kinds))) or '?'}"

    def with_images(self, image: bytes, corrupt_image: bytes | None) -> PreferencePair:
        """This pair with its clean image x and its x~: the corruption stage's addition (the editor's pairs
        leave the image out, so the image bytes travel once more, not twice)."""
        return replace(self, image=image, corrupt_image=corrupt_image)


@dataclass(frozen=True)
class Rejection:
    """Why no pair was built for a record; `reason` is one of REASONS, `detail` says what exactly."""

    record_id: str
    reason: Reason
    detail: str = ""
    critic: str = ""

    def __str__(self) -> str:
        return f"record {self.record_id!r}: {self.reason}" + (f" ({self.detail})" if self.detail else "")


def _locate(y0: str, i: int, e: Edit) -> tuple[int, int] | str:
    # Character range of edit i in y0, or the rejection reason.
    if e.start is not None:
        if not (isinstance(e.start, int) and 0 <= e.start <= len(y0)
                and y0[e.start:e.start + len(e.old)] == e.old):
            return "edit_not_found"
        return e.start, e.start + len(e.old)
    if not e.old:
        return "edit_ambiguous"  # an insertion needs a start: "" occurs everywhere
    first = y0.find(e.old)
    if first < 0:
        return "edit_not_found"
    if y0.find(e.old, first + 1) >= 0:
        return "edit_ambiguous"
    return first, first + len(e.old)


def apply_edits(y0: str, edits: Sequence[Edit], limits: PairLimits) -> str | tuple[Reason, str]:
    """y0 with every edit applied, or (reason, detail) when an edit is not text, not found or overlaps."""
    placed = []
    for i, e in enumerate(edits):
        if not isinstance(e, Edit) or not isinstance(e.old, str) or not isinstance(e.new, str):
            return "bad_text", f"edits[{i}] is not an edit of text"
        if _CONTROL.search(e.new):
            return "bad_text", f"edits[{i}].new holds control characters"
        if len(e.new) > limits.max_chars:
            return "too_long", f"edits[{i}].new has {len(e.new)} characters (limit {limits.max_chars})"
        where = _locate(y0, i, e)
        if isinstance(where, str):
            return where, f"edits[{i}].old {e.old[:80]!r}" + (f" at {e.start}" if e.start is not None else "")
        placed.append((*where, i, e.new))
    placed.sort()
    for (s0, e0, i0, _), (s1, _, i1, _) in zip(placed, placed[1:], strict=False):
        # Two insertions at one point, or any character claimed twice, have no single meaning.
        if s1 < e0 or s1 == s0:
            return "overlapping_edits", f"edits[{i0}] and edits[{i1}]"
    out, pos = [], 0
    for s, e, _, new in placed:
        out += [y0[pos:s], new]
        pos = e
    return "".join(out) + y0[pos:]


def _masked_tokens(text: str, spans: Sequence[Span], tokenizer) -> int:
    # With the training tokenizer the count is of tokens: a normalizer may drop the only changed characters.
    if tokenizer is None:
        return sum(b > a for a, b in spans)
    return sum(token_mask_for_text(tokenizer, text, spans)[1])


def build_pair(record: Record, y0: str, verdict: CriticVerdict, policy_version: int,
               limits: PairLimits | None = None, tokenizer=None) -> PreferencePair | Rejection:
    """Apply the verdict's edits to y0 and validate the pair (SPAN_EDITOR.md steps 3-4).

    With a (fast, HF) tokenizer the masks must also be non-empty at the token level.
    """
    limits = limits or PairLimits()
    rid = record.record_id

    def reject(reason: Reason, detail: str = "") -> Rejection:
        return Rejection(rid, reason, detail, verdict.critic)

    if verdict.verdict not in ("wrong", "right"):
        # The critic's own reason code ("timeout", "not_json", "injection", "balance", ...: a bounded set)
        # stays the rejection's reason all the way to the metric; a reason without a known code is "abstain".
        code = str(verdict.reason).split(":", 1)[0].strip()
        return reject(code if code in CRITIC_REASONS else "abstain", verdict.reason[:200])
    if not verdict.edits:
        return reject("no_edits", f"verdict {verdict.verdict!r} without edits")
    if not isinstance(y0, str) or _CONTROL.search(y0):
        return reject("bad_text", "y0 is not plain text")
    if not y0.strip():
        return reject("empty_text", "y0 is blank")
    if len(y0) > limits.max_chars:
        return reject("too_long", f"y0 has {len(y0)} characters (limit {limits.max_chars})")
    edited = apply_edits(y0, verdict.edits, limits)
    if isinstance(edited, tuple):
        return reject(*edited)
    if not edited.strip():
        return reject("empty_text", "the edited text is blank")
    if len(edited) > limits.max_chars:
        return reject("too_long", f"the edited text has {len(edited)} characters (limit {limits.max_chars})")
    if edited == y0:
        return reject("no_change", "the edits leave y0 unchanged")
    branch = "A" if verdict.verdict == "wrong" else "B"
    y_plus, y_minus = (edited, y0) if branch == "A" else (y0, edited)
    spans_minus, spans_plus = word_diff(y_minus, y_plus)
    masked = {}
    for side, text, spans in (("y+", y_plus, spans_plus), ("y-", y_minus, spans_minus)):
        masked[side] = _masked_tokens(text, spans, tokenizer)
        if not masked[side]:
            return reject("empty_mask", f"the spans on {side} cover no token")
    if branch == "B" and tokenizer is not None and masked["y+"] != masked["y-"]:
        # A counterfactual number the tokenizer splits into digits while the true one is a single token
        # ("47" vs "52"): the pair would teach that split digits are wrong, not that the value is (measured:
        # every single-digit token pushed down, no merged number token ever). Corrections (branch A) stay.
        return reject("token_shape", f"{masked['y-']} edited tokens in y- vs {masked['y+']} in y+")
    wp, wm = _words(y_plus), _words(y_minus)
    if max(len(wp), len(wm)) > limits.short_answer_words:
        frac = max(_covered(wp, spans_plus) / max(len(wp), 1), _covered(wm, spans_minus) / max(len(wm), 1))
        if frac > limits.max_edit_fraction:
            return reject("too_many_edited_words",
                          f"{frac:.2f} of words edited (limit {limits.max_edit_fraction})")
        sim = SequenceMatcher(None, [t for t, _, _ in wp], [t for t, _, _ in wm], autojunk=False).ratio()
        if sim < limits.min_similarity:
            return reject("low_similarity", f"word similarity {sim:.2f} (limit {limits.min_similarity})")
    return PreferencePair(rid, y_plus, y_minus, tuple(spans_plus), tuple(spans_minus), branch, verdict.critic,
                          verdict.raw[: limits.raw_chars], int(policy_version),
                          tuple(e.kind for e in verdict.edits), verdict.counterfactual if branch == "B" else "",
                          prompt=record.prompt)


def _words(text: str) -> list[tuple[str, int, int]]:
    # The diff's tokens without punctuation marks: the filters count words.
    return [t for t in tokenize(text) if _WORD.match(t[0])]


def _covered(words: list[tuple[str, int, int]], spans: Sequence[Span]) -> int:
    # Words inside any span.
    return sum(any(a <= s and e <= b for a, b in spans) for _, s, e in words)


@dataclass
class EditBatch:
    """What one editing call produced: the pairs, the rejections, and the counts by outcome."""

    pairs: list[PreferencePair] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one audit row per answer (streaming/audit.py)

    def counts(self) -> dict[str, int]:
        """Pairs per branch ("pairs_A", "pairs_B") and rejections per reason."""
        c = Counter(f"pairs_{p.branch}" for p in self.pairs)
        c.update(r.reason for r in self.rejections)
        return dict(c)

    def outcome(self, seconds: float = 0.0, offered: dict[str, int] | None = None) -> StageOutcome:
        """The editor stage's typed result: pairs kept (with their policy versions and kinds), rejections
        dropped with their reason."""
        kept = tuple(dict.fromkeys(p.record_id for p in self.pairs))
        return StageOutcome("editor", kept, {r.record_id: r.reason for r in self.rejections if r.record_id not in kept},
                            versions={p.record_id: p.policy_version for p in self.pairs},
                            kinds={p.record_id: p.kind for p in self.pairs}, offered=dict(offered or {}),
                            seconds=seconds, finished=time.time(), audit=tuple(self.rows))


class PairBuilder:
    """Builds pairs, drops duplicates (record id, y+, y-) and counts every outcome since creation."""

    def __init__(self, limits: PairLimits | None = None, tokenizer=None):
        self.limits = limits or PairLimits()
        self.tokenizer = tokenizer
        self.counts: Counter[str] = Counter()
        self._seen: set[bytes] = set()

    def build(self, record: Record, y0: str, verdict: CriticVerdict, policy_version: int
              ) -> PreferencePair | Rejection:
        """build_pair plus duplicate dropping and counting."""
        out = build_pair(record, y0, verdict, policy_version, self.limits, self.tokenizer)
        if isinstance(out, PreferencePair):
            # A digest, not the texts, so the memory per pair seen stays 16 bytes.
            key = hashlib.blake2b("\0".join((out.record_id, out.y_plus, out.y_minus)).encode(
                "utf-8", "surrogatepass"), digest_size=16).digest()
            if key in self._seen:
                out = Rejection(out.record_id, "duplicate", "same (record id, y+, y-) seen before", out.critic)
            else:
                self._seen.add(key)
        self.counts[f"pairs_{out.branch}" if isinstance(out, PreferencePair) else out.reason] += 1
        return out

    def build_batch(self, records: Sequence[Record], answers: Sequence[str],
                    verdicts: Sequence[CriticVerdict], policy_version: int | Sequence[int]) -> EditBatch:
        """One pair or rejection per (record, answer, verdict), collected into an EditBatch.

        policy_version is one version for all answers or one per answer.
        """
        versions = [policy_version] * len(answers) if isinstance(policy_version, int) else list(policy_version)
        if not len(records) == len(answers) == len(verdicts) == len(versions):
            raise ValueError(f"{len(records)} records, {len(answers)} answers, {len(verdicts)} verdicts, "
                             f"{len(versions)} policy versions")
        batch = EditBatch()
        for rec, y0, verdict, version in zip(records, answers, verdicts, versions, strict=True):
            out = self.build(rec, y0, verdict, version)
            (batch.pairs if isinstance(out, PreferencePair) else batch.rejections).append(out)
            batch.rows.append(editor_row(rec.record_id, version, y0, verdict, out))
        return batch
