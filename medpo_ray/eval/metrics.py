"""Report-level metrics beyond structured accuracy: clinical efficacy from the finding labeler,
hallucinated findings, BLEU / ROUGE-L, critic edits, and the grounding-sensitivity arithmetic.

Clinical efficacy classes are the labeler's positive claims keyed by finding and side ("nodule/right";
"cardiomegaly" when no side is written): CheXpert's 14 observations would fold every embedded lesion
into `lung_lesion` and so could not see laterality, the error the preference pairs target. A claim
counts only when it is "present"; uncertain and negated mentions are not positive findings.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from medpo_ray.labeler import label


def finding_labels(text: str) -> frozenset[str]:
    """The positive findings a report states, as "finding/side" (or "finding" when no side is given)."""
    out = set()
    for claim in label(text):
        if claim.status != "present":
            continue
        side = claim.side.value if claim.side is not None and "side" not in claim.ambiguous else None
        out.add(f"{claim.finding}/{side}" if side else claim.finding)
    return frozenset(out)


@dataclass(frozen=True)
class PRF:
    """Counts of one class (or of all, micro-averaged) and the precision / recall / F1 they give."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); None when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        """TP / (TP + FN); None when nothing was true."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        """2TP / (2TP + FP + FN); None when the class never occurs in either."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else None

    def as_dict(self) -> dict:
        """Counts and rates, for JSON."""
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


def clinical_efficacy(predicted: Sequence[frozenset[str]], reference: Sequence[frozenset[str]]) -> dict:
    """Per-class, micro and macro P/R/F1 of predicted against reference label sets (one pair per report)."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted label sets for {len(reference)} references")
    tp: Counter = Counter()
    fp: Counter = Counter()
    fn: Counter = Counter()
    for pred, ref in zip(predicted, reference, strict=True):
        for c in pred & ref:
            tp[c] += 1
        for c in pred - ref:
            fp[c] += 1
        for c in ref - pred:
            fn[c] += 1
    classes = sorted(set(tp) | set(fp) | set(fn))
    per = {c: PRF(tp[c], fp[c], fn[c]) for c in classes}
    micro = PRF(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    # Macro over classes present in the reference: a class only ever hallucinated has no recall to average.
    ref_classes = [c for c in classes if tp[c] + fn[c]]

    def mean(values: Iterable[float | None]) -> float | None:
        vals = [0.0 if v is None else v for v in values]
        return sum(vals) / len(vals) if vals else None

    macro = {"precision": mean(per[c].precision for c in ref_classes),
             "recall": mean(per[c].recall for c in ref_classes), "f1": mean(per[c].f1 for c in ref_classes)}
    return {"micro": micro.as_dict(), "macro": macro, "per_class": {c: p.as_dict() for c, p in per.items()}}


def hallucinations(predicted: Sequence[frozenset[str]], reference: Sequence[frozenset[str]]) -> dict:
    """Findings stated but not true (hallucinated) and true but not stated (omitted), per report."""
    n = len(reference)
    halluc = [len(p - r) for p, r in zip(predicted, reference, strict=True)]
    omitted = [len(r - p) for p, r in zip(predicted, reference, strict=True)]
    return {"hallucinated_per_report": sum(halluc) / n if n else None,
            "reports_with_hallucination": sum(h > 0 for h in halluc) / n if n else None,
            "omitted_per_report": sum(omitted) / n if n else None, "n": n}


def text_similarity(predicted: Sequence[str], reference: Sequence[str]) -> dict:
    """Corpus BLEU-4 (sacrebleu, 0-100) and mean ROUGE-L F-measure (rouge-score, 0-1)."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if not predicted:
        return {"bleu": None, "rouge_l": None, "n": 0}
    bleu = sacrebleu.corpus_bleu(list(predicted), [list(reference)]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predicted, reference, strict=True)]
    return {"bleu": bleu, "rouge_l": sum(rouge) / len(rouge), "n": len(predicted)}


def critic_edits(verdicts: Sequence) -> dict:
    """Edits the critic proposes per report (0 when it judges the report right) and its verdict shares."""
    n = len(verdicts)
    if not n:
        return {"edits_per_report": None, "wrong": None, "right": None, "abstain": None, "n": 0}
    kinds = Counter(v.verdict for v in verdicts)
    edits = sum(len(v.edits) for v in verdicts if v.verdict == "wrong")
    return {"edits_per_report": edits / n, **{k: kinds[k] / n for k in ("wrong", "right", "abstain")}, "n": n}


def grounding_summary(rows: Sequence[tuple[float, float, float]]) -> dict:
    """Mean drop of the findings' per-token log-likelihood under lesion vs control corruption.

    Each row is (clean, lesion-corrupted, control-corrupted) mean log-likelihood of one study. A drop
    is clean minus corrupted (positive: the corruption made the true findings less likely). The
    difference's standard error is over the paired per-study differences.
    """
    n = len(rows)
    if not n:
        return {"drop_lesion": None, "drop_control": None, "difference": None, "difference_se": None, "n": 0}
    lesion = [c - x for c, x, _ in rows]
    control = [c - y for c, _, y in rows]
    diffs = [a - b for a, b in zip(lesion, control, strict=True)]
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else None
    return {"drop_lesion": sum(lesion) / n, "drop_control": sum(control) / n, "difference": mean,
            "difference_se": se, "n": n}


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation of the values that are not None, and how many there were."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd, len(vals)
