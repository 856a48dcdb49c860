"""The reference critic on real reports (IU-Xray, MIMIC-CXR): the rule labeler applied to y0 and to the
reference report, and a minimal, sentence-local edit for each finding y0 gets wrong.

Truth, per finding, comes from the reference's claims (medpo_ray/labeler): present (with the sides,
severities, counts and measurements written with it), uncertain, absent, or not mentioned, which counts
as absent only when no finding of the same family (opacity / consolidation / pneumonia / atelectasis /
edema; nodule / mass / lesion; heart size) is stated or hedged either, since reports name one picture with
different words. A hedged claim in y0, or a finding the reference only hedges, is not judged.

What is judged wrong, and the edit that fixes it (nothing else in y0 changes):
  a present finding the reference calls absent   "a"/"an" -> "no", or "no " inserted before the phrase
                                                   ("There is no edema", "No focal consolidation")
  an absent finding the reference calls present  the "no" in front of it removed, when that "no" governs
                                                   no other finding that is absent in the reference
  the side of a present finding                  the side word swapped (left, right, bilateral)
  its severity (small~mild, moderate, large~severe) the severity word swapped for the reference's
  its count, its measurement                     the count word / the number (in y0's unit) replaced
A finding y0 does not mention is an omission, not a wrong span: sentence insertion is not an edit here.
Where a fix cannot be made this way, or the fixed text does not read back as right, the critic abstains.

A reference that names no finding the labeler knows is a normal study: every finding y0 states is wrong.

Counterfactuals (branch B, y0 agrees): the same edits in reverse on agreeing claims: a side swapped, a
severity moved to its neighbour, the presence of the findings one "no" governs flipped. Keys
"report-side:left>right", "report-severity:small>moderate", "report-presence:<findings>.absent><findings>.present":
each has its mirror, and critics/balance.py keeps both directions equally used per finding set.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from medpo_ray.critics.answer import abstain, changed_words
from medpo_ray.critics.base import CriticVerdict, Edit, swap
from medpo_ray.data.record import Record
from medpo_ray.labeler import Claim, label, sentences

FAMILIES = ({"lung_opacity", "consolidation", "pneumonia", "atelectasis", "edema"}, {"nodule", "mass", "lesion"},
            {"cardiomegaly", "enlarged_cardiomediastinum"}, {"pleural_effusion", "pleural_other"})
_SEVERITY_CLASS = {"small": "small", "mild": "small", "moderate": "moderate", "large": "large", "severe": "large"}
_LADDERS = (("small", "moderate", "large"), ("mild", "moderate", "severe"))
_SIDES = {"left": {"left"}, "right": {"right"}, "bilateral": {"left", "right"}}
# Words that may stand between a sentence's start (or "there is/are") and a finding for "no" to go in front.
_PREFIX = re.compile(r"^(?:(?P<there>there (?:is|are)|(?:is|are)) )?(?P<mods>(?:[a-z-]+ ){0,3})"
                     r"(?P<evidence>(?:evidence|signs?) of )?$", re.I)
_STOP = {"is", "are", "was", "were", "with", "without", "of", "in", "and", "or", "no", "not", "there", "has",
         "have", "but", "to", "the", "a", "an"}


def _family(finding: str) -> set[str]:
    return next((f for f in FAMILIES if finding in f), {finding})


@dataclass
class Truth:
    """What the reference says of one finding."""

    status: str  # present | uncertain | absent | unmentioned
    sides: set[str]
    claims: list[Claim]

    @property
    def mixed(self) -> bool:
        """The reference both states and negates it ("streaky opacities ... no focal airspace disease"):
        its words tell apart what the labeler folds into one finding, so a negation in y0 is not judged."""
        return {"present", "absent"} <= {c.status for c in self.claims}


def truths(reference: str) -> dict[str, Truth]:
    """Per finding named in the reference: its status (present > uncertain > absent) and present sides."""
    out: dict[str, Truth] = {}
    rank = {"present": 3, "uncertain": 2, "absent": 1}
    for c in label(reference):
        t = out.setdefault(c.finding, Truth("absent", set(), []))
        if rank[c.status] > rank[t.status]:
            t.status = c.status
        t.claims.append(c)
        if c.status == "present" and c.side is not None and "side" not in c.ambiguous:
            t.sides |= _SIDES.get(str(c.side.value), set())
    return out


def _truth_of(finding: str, truth: dict[str, Truth]) -> Truth:
    if finding in truth:
        return truth[finding]
    if any(truth[f].status in ("present", "uncertain") for f in _family(finding) if f in truth):
        return Truth("uncertain", set(), [])  # a sibling is stated: the words differ, the picture may not
    return Truth("unmentioned", set(), [])


def _word_at(text: str, start: int) -> tuple[int, int]:
    m = re.compile(r"[\w-]+").match(text, start)
    return (start, m.end()) if m else (start, start)


def negate(y0: str, c: Claim) -> Edit | None:
    """The edit that makes present claim `c` absent: "a"/"an" -> "no", or "no " inserted before it."""
    if c.count is not None and c.count.span.text.lower() in ("a", "an") and "count" not in c.ambiguous:
        return swap(c.count.span, "no", "presence")
    s = c.sentence
    prefix = y0[s.start:c.mention.start]
    m = _PREFIX.match(prefix)
    if m is None or any(w.lower() in _STOP for w in m.group("mods").split()):
        return None
    at = s.start + (m.end("there") + 1 if m.group("there") else 0)
    a, b = _word_at(y0, at)
    word = y0[a:b]
    if not word:
        return None
    if at == s.start:  # "Focal consolidation" -> "No focal consolidation"; an acronym keeps its case
        new = "No " + (word if word.isupper() and len(word) > 1 else word[:1].lower() + word[1:])
    else:
        new = "no " + word
    return Edit(word, new, a, "presence")


def affirm(y0: str, c: Claim, others: Sequence[Claim], shared: bool = False) -> Edit | None:
    """The edit that makes absent claim `c` present: its "no" removed; None when that "no" is not right in
    front of the finding's phrase, or (unless `shared`) also negates another claim in `others`."""
    cue = c.cue
    if cue is None or cue.text.lower() != "no" or (not shared and any(o is not c and o.cue == cue for o in others)):
        return None
    between = y0[cue.end:c.mention.start]
    if len(between.split()) > 3 or any(w.lower() in _STOP for w in between.split()):
        return None
    a, b = _word_at(y0, cue.end + 1)
    word = y0[a:b]
    if not word or y0[cue.end:a] != " ":
        return None
    new = word[:1].upper() + word[1:] if cue.text[:1].isupper() else word  # "No effusion" -> "Effusion"
    return Edit(y0[cue.start:b], new, cue.start, "presence")


def _attribute_fixes(c: Claim, t: Truth, tol: float) -> list[Edit]:
    edits = []
    present = [r for r in t.claims if r.status == "present"]
    if c.side is not None and "side" not in c.ambiguous and t.sides:
        mine = _SIDES.get(str(c.side.value), set())
        if mine and not mine <= t.sides:
            new = "bilateral" if t.sides == {"left", "right"} else next(iter(t.sides))
            edits.append(swap(c.side.span, new, "laterality"))
    severities = {_SEVERITY_CLASS.get(str(r.severity.value)) for r in present if r.severity is not None}
    if c.severity is not None and "severity" not in c.ambiguous and len(severities) == 1 and None not in severities:
        want = severities.pop()
        if _SEVERITY_CLASS.get(str(c.severity.value)) not in (want, None):
            written = next(r.severity.span.text for r in present if r.severity is not None)
            edits.append(swap(c.severity.span, written.lower(), "size"))
    counts = {r.count.value for r in present if r.count is not None and isinstance(r.count.value, int)}
    if (c.count is not None and isinstance(c.count.value, int) and "count" not in c.ambiguous and len(counts) == 1
            and c.count.value != next(iter(counts)) and c.count.span.text.lower() not in ("a", "an")):
        written = next(r.count.span.text for r in present if r.count is not None and r.count.value in counts)
        edits.append(swap(c.count.span, written.lower(), "count"))
    sizes = {r.measurement.value for r in present if r.measurement is not None}
    if c.measurement is not None and "measurement" not in c.ambiguous and len(sizes) == 1:
        mm = next(iter(sizes))
        if abs(float(c.measurement.value) - float(mm)) > tol:
            value = float(mm) / 10 if c.measurement.unit.lower().startswith("c") else float(mm)
            edits.append(Edit(c.measurement.span.text, f"{value:g}", c.measurement.span.start, "measurement"))
    return edits


def problems(y0: str, truth: dict[str, Truth], tol: float) -> tuple[list[Edit], list[str]]:
    """(edits that fix y0, what is wrong that no such edit fixes) against the reference's truth."""
    claims = label(y0)
    edits, unfixable = [], []
    for c in claims:
        if c.status == "uncertain":
            continue
        t = _truth_of(c.finding, truth)
        if t.status == "uncertain":
            continue
        if c.status == "present" and t.status in ("absent", "unmentioned"):
            fix = negate(y0, c)
            if fix is None:
                unfixable.append(f"{c.mention.text!r} is {t.status} in the reference")
            else:
                edits.append(fix)
        elif c.status == "absent" and t.status == "present" and not t.mixed:
            sided = c.side is not None and "side" not in c.ambiguous and t.sides
            if sided and not (_SIDES.get(str(c.side.value), set()) & t.sides):
                continue  # "no effusion on the right" beside a left one agrees
            fix = affirm(y0, c, claims)
            if fix is None:
                unfixable.append(f"{c.mention.text!r} is present in the reference")
            else:
                edits.append(fix)
        elif c.status == "present" and t.status == "present":
            edits += _attribute_fixes(c, t, tol)
    unique = {(e.start, e.old): e for e in edits}
    return sorted(unique.values(), key=lambda e: e.start), unfixable


def apply(y0: str, edits: Sequence[Edit]) -> str:
    """y0 with non-overlapping located edits applied."""
    out = y0
    for e in sorted(edits, key=lambda e: e.start, reverse=True):
        out = out[:e.start] + e.new + out[e.start + len(e.old):]
    return out


def _overlap(edits: Sequence[Edit]) -> bool:
    return any(a.start + len(a.old) > b.start for a, b in zip(edits, edits[1:], strict=False))


def _per_sentence(y0: str, edits: Sequence[Edit]) -> int:
    bounds = [s.start for s in sentences(y0)] or [0]
    counts: dict[int, int] = {}
    for e in edits:
        first = max((b for b in bounds if b <= e.start), default=0)
        counts[first] = counts.get(first, 0) + changed_words(e.old, e.new)
    return max(counts.values(), default=0)


def _statuses(claims: Sequence[Claim]) -> Counter:
    """Claims per (sentence start, finding, status)."""
    return Counter((c.sentence.start, c.finding, c.status) for c in claims)


def _flips(y0: str, was: Counter, edit: Edit, sentence: int, before: str, after: str) -> set[str]:
    """Findings of y0's sentence starting at `sentence` whose claims go from `before` to `after` under
    `edit` (`was`: y0's _statuses; the edit lies inside that sentence, so its start does not move)."""
    now = _statuses(label(apply(y0, [edit])))
    return {f for (s, f, st) in was if s == sentence and st == before and now[(s, f, after)] > was[(s, f, after)]}


def counterfactuals(y0: str, truth: dict[str, Truth]) -> list[tuple[str, Edit]]:
    """Single-edit swaps that make an agreeing y0 wrong, each with its balance key. A presence flip names
    every finding it flips ("No pneumothorax or effusion" -> "Pneumothorax or effusion" flips both), so its
    mirror is the flip of the same findings the other way."""
    claims = label(y0)
    was = _statuses(claims)
    out: list[tuple[str, Edit]] = []
    flipped: set[tuple[int, str]] = set()
    for c in claims:
        t = _truth_of(c.finding, truth)
        if c.status == "uncertain" or t.status == "uncertain":
            continue
        if c.status == "absent":
            edit = affirm(y0, c, claims, shared=True)
            if edit is not None and (edit.start, edit.old) not in flipped:
                flipped.add((edit.start, edit.old))
                if names := _flips(y0, was, edit, c.sentence.start, "absent", "present"):
                    f = "+".join(sorted(names))
                    out.append((f"report-presence:{f}.absent>{f}.present", edit))
        if c.status != "present":
            continue
        if (edit := negate(y0, c)) is not None and (edit.start, edit.old) not in flipped:
            flipped.add((edit.start, edit.old))
            if names := _flips(y0, was, edit, c.sentence.start, "present", "absent"):
                f = "+".join(sorted(names))
                out.append((f"report-presence:{f}.present>{f}.absent", edit))
        if c.side is not None and "side" not in c.ambiguous and c.side.span.text.lower() in ("left", "right"):
            old = c.side.span.text.lower()
            other = "right" if old == "left" else "left"
            out.append((f"report-side:{old}>{other}", swap(c.side.span, other, "laterality")))
        if c.severity is not None and "severity" not in c.ambiguous:
            word = c.severity.span.text.lower()
            for ladder in _LADDERS:
                if word in ladder:
                    i = ladder.index(word)
                    out += [(f"report-severity:{word}>{ladder[j]}", swap(c.severity.span, ladder[j], "size"))
                            for j in (i - 1, i + 1) if 0 <= j < len(ladder)]
    return out


def _kind(old: str, new: str) -> str:
    before, after = set(re.findall(r"[a-z0-9.]+", old.lower())), set(re.findall(r"[a-z0-9.]+", new.lower()))
    words = before ^ after  # the words that changed
    if "no" in words:
        return "presence"
    if words & {"left", "right", "bilateral"}:
        return "laterality"
    if words & set(_SEVERITY_CLASS):
        return "size"
    return "measurement" if any(w[:1].isdigit() for w in words) else "count"


def word_edits(y0: str, fixed: str) -> list[Edit]:
    """The located edits that turn y0 into `fixed`, word by word (an inserted word goes with its neighbour,
    since an edit replaces text that occurs in y0)."""
    a, b = list(re.finditer(r"\S+", y0)), list(re.finditer(r"\S+", fixed))
    ops = SequenceMatcher(None, [m.group() for m in a], [m.group() for m in b], autojunk=False).get_opcodes()
    edits = []
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            continue
        if i2 == len(a) and (tag == "insert" or j2 == len(b)) and i1 > 0:
            i1, j1 = i1 - 1, j1 - 1  # at the end: take the word before
        elif tag != "replace" or i2 == i1 or j2 == j1:
            i2, j2 = min(i2 + 1, len(a)), min(j2 + 1, len(b))  # take the word after
        old = y0[a[i1].start():a[i2 - 1].end()]
        new = fixed[b[j1].start():b[j2 - 1].end()] if j2 > j1 else ""
        edits.append(Edit(old, new, a[i1].start(), _kind(old, new)))
    merged: list[Edit] = []
    for e in sorted(edits, key=lambda e: e.start):  # two anchors on one word become one edit
        if merged and merged[-1].start + len(merged[-1].old) > e.start:
            return []
        merged.append(e)
    return merged


def corrected(y0: str, truth: dict[str, Truth], tol: float, rounds: int = 4) -> tuple[str, list[str]]:
    """y0 with every fixable error fixed, round by round (a "no" put before the first finding of a list
    negates the rest, so an error left after one round may be gone after it), and what is still wrong."""
    text = y0
    for _ in range(rounds):
        edits, unfixable = problems(text, truth, tol)
        if not edits:
            return text, unfixable
        if _overlap(edits):
            return text, ["two fixes touch the same words"]
        text = apply(text, edits)
    edits, unfixable = problems(text, truth, tol)
    return text, unfixable + [f"{len(edits)} errors left after {rounds} rounds"] * bool(edits)


def review(record: Record, y0: str, tol: float, max_per_sentence: int, critic) -> CriticVerdict:
    """Wrong with the fixing edits, right with a balanced counterfactual, or an abstention with its reason."""
    truth = truths(record.target)  # empty: a normal study, every finding y0 states is absent
    fixed, unfixable = corrected(y0, truth, tol)
    if unfixable:
        return abstain("structural", "; ".join(unfixable)[:300], critic.name)
    if fixed == y0:
        return critic.counterfactual(record, counterfactuals(y0, truth))
    edits = word_edits(y0, fixed)
    if not edits or apply(y0, edits) != fixed:
        return abstain("structural", "the fixes do not split into separate word edits", critic.name)
    worst = _per_sentence(y0, edits)
    if worst > max_per_sentence:
        return abstain("too_many_changes", f"{worst} words in one sentence (limit {max_per_sentence})", critic.name)
    return CriticVerdict("wrong", tuple(edits), critic.name, ", ".join(sorted({e.kind for e in edits})))
