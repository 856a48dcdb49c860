"""Per-record outcomes of one evaluation, so that two models scored on the same records can be compared
item by item (paired tests, medpo_ray/eval/stats.py) instead of only by their averages."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from medpo_ray.data.record import Record
from medpo_ray.eval import metrics
from medpo_ray.eval.structured import read_findings, score_report, score_vqa

# Item metrics that are a rate over reports or VQA answers, with the HEADLINE key they explain.
ITEM_METRICS = {
    "exact": "exact", "laterality": "laterality", "count": "count", "hallucinated": "hallucinated",
    "critic_edits": "critic_edits", "vqa_closed": "vqa_closed", "vqa_open": "vqa_open",
}


def per_item(records: Sequence[Record], texts: Mapping[str, str], tol: float,
             verdicts: Mapping[str, object]) -> dict[str, dict]:
    """record id -> {metric: value} for the item metrics that apply to it (reports: exact, laterality,
    count as 0/1, hallucinated findings and critic edits as counts; VQA: vqa_closed or vqa_open as 0/1).
    `verdicts`: record id -> the critic's verdict on each report's text."""
    out: dict[str, dict] = {}
    reports = [r for r in records if r.task == "report" and r.findings and "lesions" in r.findings]
    for r in reports:
        v = verdicts[r.record_id]
        text = texts.get(r.record_id)
        s = score_report(read_findings(text, r.findings) if text is not None else None, r.findings, tol)
        row = {k: s[k][0] for k in ("exact", "count")}
        if s["laterality"][1]:
            row["laterality"] = s["laterality"][0]
        row["hallucinated"] = len(metrics.finding_labels(text or "") - metrics.finding_labels(r.target))
        row["critic_edits"] = len(v.edits) if v.verdict == "wrong" else 0
        out[r.record_id] = row
    for r in records:
        if r.task == "vqa":
            out[r.record_id] = {k: a for k, (a, _) in score_vqa(texts.get(r.record_id), r).items()}
    return out
