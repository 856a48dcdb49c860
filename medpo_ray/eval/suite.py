"""The full evaluation of one policy on a held-out split: greedy vLLM generation, then structured
accuracy, clinical efficacy, hallucinations, BLEU / ROUGE-L, critic edits and grounding sensitivity.

`Evaluator` keeps one vLLM engine and loads each further model of the same architecture and tokenizer
into it as a weight push, so an ablation pays the engine start-up once instead of once per run.
"""
from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from medpo_ray.data.record import Record
from medpo_ray.eval import metrics
from medpo_ray.eval.items import per_item
from medpo_ray.eval.structured import generate_texts, score_outputs

# (key, label, higher is better) of the headline numbers, in table order.
HEADLINE = (
    ("presence", "presence", True), ("laterality", "laterality", True), ("count", "count", True),
    ("size", "size bin", True), ("measurement", "measurement ±2 mm", True), ("exact", "exact findings", True),
    ("vqa_closed", "VQA closed", True), ("vqa_open", "VQA open", True),
    ("vqa_closed_judge", "VQA closed (LLM judge)", True), ("vqa_open_judge", "VQA open (LLM judge)", True),
    ("ce_precision", "CE precision (micro)", True), ("ce_recall", "CE recall (micro)", True),
    ("ce_f1", "CE F1 (micro)", True), ("hallucinated", "hallucinated findings / report", False),
    ("bleu", "BLEU-4", True), ("rouge_l", "ROUGE-L", True), ("critic_edits", "critic edits / report", False),
    ("drop_lesion", "log-lik drop, lesion corrupted", True),
    ("drop_control", "log-lik drop, control corrupted", False),
    ("grounding", "grounding (lesion − control drop)", True),
)


def held_out(records: Sequence[Record], studies: int) -> list[Record]:
    """The records (reports and VQA) of the first `studies` studies in study-id order."""
    keep = set(sorted({r.study_id or r.record_id for r in records})[:studies])
    return [r for r in records if (r.study_id or r.record_id) in keep]


def _fingerprint(model_dir: Path) -> str:
    # Models that share this can share one engine: same architecture config and the same tokenizer.
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        p = model_dir / name
        h.update(p.read_bytes() if p.is_file() else b"-")
    return h.hexdigest()


class Evaluator:
    """Scores models on fixed records; reuses its vLLM engine across models of one architecture."""

    def __init__(self, records: Sequence[Record], *, tol: float = 2.0, max_tokens: int = 96,
                 grounding_studies: int = 100, corruption_cfg=None, dtype: str = "float32",
                 max_model_len: int = 512, kv_cache_gib: float = 1.0, judge=None):
        from medpo_ray.config import CorruptionConfig
        from medpo_ray.critics.reference import ReferenceCritic

        self.records = list(records)
        self.tol, self.max_tokens, self.grounding_studies = tol, max_tokens, grounding_studies
        self.corruption_cfg = corruption_cfg or CorruptionConfig()
        self.engine_kwargs = {"dtype": dtype, "max_model_len": max_model_len, "kv_cache_gib": kv_cache_gib}
        self.critic = ReferenceCritic(tol)
        self.judge = judge  # eval/judge.py Judge, or None (exact match only)
        self.engine = None
        self._served: str | None = None

    def _serve(self, model_dir: Path) -> None:
        from medpo_ray.rollout.engine import RolloutEngine

        key = _fingerprint(model_dir)
        if self.engine is not None and key == self._served:
            from safetensors.torch import load_file

            from medpo_ray.rollout.weight_sync.object_store import ObjectStoreSync

            tensors: dict = {}
            for f in sorted(model_dir.glob("*.safetensors")):
                tensors.update(load_file(str(f)))
            ObjectStoreSync(self.engine).sync(tensors.items(), self.engine.policy_version + 1)
            return
        self.engine = None  # release the old engine before starting one for another architecture
        self.engine = RolloutEngine(model_dir, **self.engine_kwargs)
        self._served = key

    def generate(self, model_dir: str | Path) -> tuple[dict[str, str], int]:
        """Greedy outputs (record_id -> text) of the model and how many records it could not take."""
        from medpo_ray.rollout.engine import RolloutRequest

        self._serve(Path(model_dir))
        requests = [RolloutRequest(r.record_id, r.image, r.prompt) for r in self.records]
        texts, bad = generate_texts(self.engine, requests, self.max_tokens, label=f"eval {Path(model_dir).name}")
        for b in bad[:5]:
            print(f"eval: skipped {b}", file=sys.stderr)
        return texts, len(bad)

    def evaluate(self, model_dir: str | Path) -> dict:
        """Every metric of the model on the records, as one JSON-ready dict (see `headline`)."""
        from medpo_ray.eval.grounding import grounding_rows

        t0 = time.perf_counter()
        texts, unusable = self.generate(model_dir)
        t_gen = time.perf_counter() - t0
        reports = [r for r in self.records if r.task == "report"]
        verdicts = dict(zip((r.record_id for r in reports), self.critic.review_many(
            [(r, texts.get(r.record_id, "")) for r in reports]), strict=True))  # judged once, used twice
        result = {"model": str(model_dir), **score_text_metrics(self.records, texts, verdicts),
                  "structured": score_outputs(self.records, texts, self.tol, bad=unusable),
                  "items": per_item(self.records, texts, self.tol, verdicts)}
        if self.judge is not None:
            result["judge"] = self.judge.judge(self.records, texts)
        rows, bad = grounding_rows(model_dir, self.records, self.corruption_cfg, self.grounding_studies)
        result["grounding"] = {**metrics.grounding_summary(rows), "skipped": len(bad)}
        result["seconds"] = {"generate": round(t_gen, 1), "total": round(time.perf_counter() - t0, 1)}
        return result


def score_text_metrics(records: Sequence[Record], texts: dict[str, str], verdicts: dict) -> dict:
    """Clinical efficacy, hallucinations, BLEU / ROUGE-L and critic edits over the report records
    (`verdicts`: record id -> the critic's verdict on that record's text)."""
    reports = [r for r in records if r.task == "report"]
    outputs = [texts.get(r.record_id, "") for r in reports]
    predicted = [metrics.finding_labels(t) for t in outputs]
    reference = [metrics.finding_labels(r.target) for r in reports]
    return {"clinical": metrics.clinical_efficacy(predicted, reference),
            "hallucination": metrics.hallucinations(predicted, reference),
            "text": metrics.text_similarity(outputs, [r.target for r in reports]),
            "critic": metrics.critic_edits([verdicts[r.record_id] for r in reports])}


def headline(result: dict) -> dict[str, float | None]:
    """The flat headline numbers of one evaluation, keyed as in HEADLINE."""
    s, g = result["structured"], result["grounding"]
    return {**{k: s.get(k) for k in ("presence", "laterality", "count", "size", "measurement", "exact",
                                      "vqa_closed", "vqa_open")},
            "ce_precision": result["clinical"]["micro"]["precision"],
            "ce_recall": result["clinical"]["micro"]["recall"], "ce_f1": result["clinical"]["micro"]["f1"],
            "hallucinated": result["hallucination"]["hallucinated_per_report"],
            "bleu": result["text"]["bleu"], "rouge_l": result["text"]["rouge_l"],
            "critic_edits": result["critic"]["edits_per_report"],
            **{f"{k}_judge": result.get("judge", {}).get(k) for k in ("vqa_closed", "vqa_open")},
            "drop_lesion": g["drop_lesion"], "drop_control": g["drop_control"], "grounding": g["difference"]}
