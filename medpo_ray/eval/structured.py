"""Structured accuracy of generated reports and VQA answers against the findings ground truth, with the
majority and blank-image baselines beside the model.

Reports are read with the reference critic's reader of the embedded grammar (critics/embedded_reading,
built on the labeler); only the FINDINGS section is scored (it carries every lesion's measurement).
Per report record:
  parse        the report reads, and FINDINGS has one statement for each side
  presence     any lesion predicted == any lesion true                       (all studies)
  laterality   set of sides with lesions predicted == true set              (studies with a lesion)
  count        total lesions predicted == true total                        (all studies)
  size bin     per true lesion: its paired predicted lesion has its size bin  (all true lesions)
  measurement  per true lesion: paired prediction within ±tol mm             (all true lesions)
  exact        per-side counts, every size bin and every measurement right  (all studies)
Lesions pair within a side in order of diameter (the report's item order is not a claim). An
unreadable report is wrong on every metric. VQA: exact match of the normalized answer (the reference
critic's normalisation), split by closed (yes/no) and open questions.

Baselines: "majority" predicts the training split's most common finding (most common lesion count,
then the most common side arrangement for it, each lesion at the most common diameter of the study's
base image) and the most common training answer to each question; "blank image" is the model's own
output when the image is replaced by a uniform grey one of the same size.
"""
from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from medpo_ray.critics.embedded_reading import Unreadable, read_report
from medpo_ray.critics.vqa_answers import normalize
from medpo_ray.data.lesions import SIDES, size_bin
from medpo_ray.data.record import BadRecord, Record

REPORT_METRICS = ("parse", "presence", "laterality", "count", "size", "measurement", "exact")
VQA_METRICS = ("vqa_closed", "vqa_open")
LABELS = {"parse": "parse rate", "presence": "presence", "laterality": "laterality", "count": "count",
          "size": "size bin", "measurement": "measurement ±{tol:g} mm", "exact": "exact findings",
          "vqa_closed": "VQA closed", "vqa_open": "VQA open"}
BLANK_GREY = 128


@dataclass(frozen=True)
class Reading:
    """What a report claims: lesions per side, and per side the (mm, size bin) of each listed lesion."""

    count: dict[str, int]
    lesions: dict[str, tuple[tuple[float | None, str | None], ...]]


def read_findings(text: str, findings: dict) -> Reading | None:
    """The Reading of a generated report, or None when it is not in the embedded grammar."""
    try:
        statements, _ = read_report(text, findings["noun"], findings["region"])
    except Unreadable:
        return None
    sides = [st.side.value if st.side else None for st in statements]
    if sorted(s for s in sides if s) != sorted(SIDES) or None in sides:
        return None
    count, lesions = {}, {}
    for st, side in zip(statements, sides, strict=True):
        count[side] = int(st.count.value) if st.present else 0
        lesions[side] = tuple((it.measurement.value if it.measurement else None,
                               it.size.value if it.size else None) for it in st.items)
    return Reading(count, lesions)


def _pairs(truth: list[dict], predicted: Sequence[tuple[float | None, str | None]]):
    t = sorted(truth, key=lambda les: les["diameter_mm"])
    p = sorted(predicted, key=lambda x: (x[0] is None, x[0] or 0.0))
    return [(les, p[k] if k < len(p) else (None, None)) for k, les in enumerate(t)]


def score_report(reading: Reading | None, findings: dict, tol: float) -> dict[str, tuple[int, int]]:
    """(correct, counted) per report metric for one study."""
    true_count = {s: findings["count"][s] for s in SIDES}
    true_total = sum(true_count.values())
    true_sides = {s for s in SIDES if true_count[s]}
    n_lesions = len(findings["lesions"])
    if reading is None:
        return {"parse": (0, 1), "presence": (0, 1), "laterality": (0, int(true_total > 0)), "count": (0, 1),
                "size": (0, n_lesions), "measurement": (0, n_lesions), "exact": (0, 1)}
    total = sum(reading.count.values())
    sizes_ok = mm_ok = 0
    for side in SIDES:
        for les, (mm, size) in _pairs([x for x in findings["lesions"] if x["side"] == side], reading.lesions[side]):
            sizes_ok += size == les["size"]
            mm_ok += mm is not None and abs(mm - les["diameter_mm"]) <= tol
    exact = (reading.count == true_count and sizes_ok == mm_ok == n_lesions
             and all(len(reading.lesions[s]) == true_count[s] for s in SIDES))
    return {"parse": (1, 1), "presence": (int((total > 0) == (true_total > 0)), 1),
            "laterality": (int(true_total > 0 and {s for s in SIDES if reading.count[s]} == true_sides),
                           int(true_total > 0)),
            "count": (int(total == true_total), 1), "size": (sizes_ok, n_lesions),
            "measurement": (mm_ok, n_lesions), "exact": (int(exact), 1)}


def normalize_answer(text: str) -> str:
    """The answer as the reference critic compares it (critics/vqa_answers.normalize: case, punctuation,
    articles, yes/no synonyms, number words, laterality phrasings, list order do not count)."""
    return normalize(text)


def score_vqa(answer: str | None, record: Record) -> dict[str, tuple[int, int]]:
    """(correct, counted) of one VQA answer under vqa_closed or vqa_open."""
    key = "vqa_closed" if record.answer_type == "closed" else "vqa_open"
    ok = answer is not None and normalize_answer(answer) == normalize_answer(record.target)
    return {key: (int(ok), 1)}


def _scorable_report(r: Record) -> bool:
    return r.task == "report" and bool(r.findings) and "lesions" in r.findings


def summarize(scores: Iterable[dict[str, tuple[int, int]]], bad: int = 0) -> dict:
    """Accuracy per metric (None where nothing was counted) and the counts behind it under "n"."""
    num: Counter = Counter()
    den: Counter = Counter()
    for s in scores:
        for k, (a, b) in s.items():
            num[k] += a
            den[k] += b
    out: dict = {k: (num[k] / den[k] if den[k] else None) for k in (*REPORT_METRICS, *VQA_METRICS)}
    out["n"] = {k: den[k] for k in (*REPORT_METRICS, *VQA_METRICS)}
    out["n"]["unusable"] = bad
    return out


def score_outputs(records: Sequence[Record], outputs: dict[str, str], tol: float, bad: int = 0) -> dict:
    """Summary of the outputs (record_id -> text; a missing id scores as unreadable) against the records."""
    scores = []
    for r in records:
        text = outputs.get(r.record_id)
        if _scorable_report(r):
            scores.append(score_report(read_findings(text, r.findings) if text is not None else None,
                                       r.findings, tol))
        elif r.task == "vqa":
            scores.append(score_vqa(text, r))
    return summarize(scores, bad)


def _mode(counter: Counter):
    # Ties go to the smallest key, so the baseline does not depend on record order.
    best = max(counter.values())
    return min(k for k, v in counter.items() if v == best)


def _base_key(findings: dict) -> tuple:
    return findings.get("modality"), findings.get("region"), findings.get("mm_per_px")


def majority_predictor(train: Sequence[Record]) -> tuple[Callable[[dict], Reading], Callable[[Record], str]]:
    """(report findings -> majority Reading, VQA record -> majority answer) from the training records."""
    studies = {r.study_id or r.record_id: r.findings for r in train if r.findings and "lesions" in r.findings}
    totals = Counter(f["total"] for f in studies.values())
    n = _mode(totals) if totals else 0
    layouts = Counter(tuple(sorted((les["side"] for les in f["lesions"]), key=SIDES.index))
                      for f in studies.values() if f["total"] == n)
    layout = _mode(layouts) if layouts else ()
    diameters: dict[tuple, Counter] = defaultdict(Counter)
    for f in studies.values():
        for les in f["lesions"]:
            diameters[_base_key(f)][les["diameter_mm"]] += 1
            diameters[None][les["diameter_mm"]] += 1

    def report(findings: dict) -> Reading:
        counter = diameters.get(_base_key(findings)) or diameters.get(None)
        mm = _mode(counter) if counter else 10
        item = (float(mm), size_bin(mm))
        return Reading({s: layout.count(s) for s in SIDES}, {s: (item,) * layout.count(s) for s in SIDES})

    by_question: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str | None, Counter] = defaultdict(Counter)
    for r in train:
        if r.task == "vqa":
            by_question[normalize_answer(r.prompt)][normalize_answer(r.target)] += 1
            by_type[r.question_type][normalize_answer(r.target)] += 1
            by_type["*"][normalize_answer(r.target)] += 1

    def answer(record: Record) -> str:
        counter = by_question.get(normalize_answer(record.prompt)) or by_type.get(record.question_type) \
            or by_type.get("*")
        return _mode(counter) if counter else ""

    return report, answer


def score_majority(records: Sequence[Record], train: Sequence[Record], tol: float) -> dict:
    """The majority baseline's summary on `records`."""
    report, answer = majority_predictor(train)
    scores = []
    for r in records:
        if _scorable_report(r):
            scores.append(score_report(report(r.findings), r.findings, tol))
        elif r.task == "vqa":
            scores.append(score_vqa(answer(r), r))
    return summarize(scores)


def generate_texts(engine, requests: Sequence, max_tokens: int, chunk: int = 256,
                   label: str = "eval") -> tuple[dict[str, str], list[BadRecord]]:
    """Greedy completions (id -> text) through the rollout engine, in chunks with a progress line each."""
    from medpo_ray.rollout.engine import SamplingSpec

    spec = SamplingSpec(n=1, temperature=0.0, max_tokens=max_tokens)
    texts: dict[str, str] = {}
    bad: list[BadRecord] = []
    start = time.perf_counter()
    for lo in range(0, len(requests), chunk):
        res = engine.generate(requests[lo:lo + chunk], spec)
        texts.update((ro.record_id, ro.text) for ro in res.rollouts)
        bad.extend(res.bad)
        done, elapsed = min(lo + chunk, len(requests)), time.perf_counter() - start
        rate = done / max(elapsed, 1e-9)
        print(f"{label}: {done}/{len(requests)} items, {rate:.1f} items/s, ETA {(len(requests) - done) / rate:.0f} s",
              file=sys.stderr, flush=True)
    return texts, bad


def blank_requests(records: Sequence[Record]) -> tuple[list, dict[str, str]]:
    """One grey-image request per distinct (prompt, image size), and record_id -> its request id."""
    from PIL import Image

    from medpo_ray.models.inputs import ImageError, open_image
    from medpo_ray.rollout.engine import RolloutRequest

    requests, key_of = {}, {}
    for r in records:
        try:
            size = open_image(r.image, r.record_id).size
        except ImageError:
            continue
        key = f"blank:{size[0]}x{size[1]}:{r.prompt}"
        if key not in requests:
            requests[key] = RolloutRequest(key, Image.new("RGB", size, (BLANK_GREY,) * 3), r.prompt)
        key_of[r.record_id] = key
    return list(requests.values()), key_of


def evaluate(model_dir, records: Sequence[Record], train_records: Sequence[Record] = (), *, tol: float = 2.0,
             max_tokens: int = 96, blank: bool = True, engine=None, dtype: str = "float32",
             max_model_len: int = 512, kv_cache_gib: float = 1.0) -> dict[str, dict]:
    """{"model": ..., "majority": ..., "blank image": ...} summaries of greedy vLLM outputs on `records`.

    The majority baseline needs `train_records`; pass an existing RolloutEngine as `engine` to reuse it.
    """
    from medpo_ray.rollout.engine import RolloutEngine, RolloutRequest

    engine = engine or RolloutEngine(model_dir, dtype=dtype, max_model_len=max_model_len, kv_cache_gib=kv_cache_gib)
    requests = [RolloutRequest(r.record_id, r.image, r.prompt) for r in records]
    texts, bad = generate_texts(engine, requests, max_tokens, label="eval model")
    results = {"model": {**score_outputs(records, texts, tol, bad=len(bad)), "tol_mm": tol}}
    if train_records:
        results["majority"] = {**score_majority(records, train_records, tol), "tol_mm": tol}
    if blank:
        grey, key_of = blank_requests(records)
        blank_texts, _ = generate_texts(engine, grey, max_tokens, label="eval blank image")
        per_record = {rid: blank_texts[k] for rid, k in key_of.items() if k in blank_texts}
        results["blank image"] = {**score_outputs(records, per_record, tol), "tol_mm": tol}
    return results


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table: one row per metric, one column per result, and the counts behind each row."""
    names = list(results)
    first = results[names[0]] if names else {}
    rows = [("metric", *names, "n")]
    for key in (*REPORT_METRICS, *VQA_METRICS):
        if all(results[n].get(key) is None for n in names):
            continue
        cells = [f"{results[n][key]:.1%}" if results[n].get(key) is not None else "-" for n in names]
        label = LABELS[key].format(tol=first.get("tol_mm", 2.0))
        rows.append((label, *cells, str(first.get("n", {}).get(key, ""))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
