"""The LLM judge of VQA answers (`eval.judge: openai`), reported beside exact match.

As in the seed paper: a closed yes/no question is decided by a regular expression (the first "yes" or
"no" of the answer against the ground truth), with no model call; every other answer is put to an
OpenAI-compatible model (the critic's chat client, critics/openai_client.py) with the question, the
reference and the candidate as JSON strings, and a schema that admits only {"correct": true|false}.
Verdicts are cached in an append-only JSONL file keyed by a hash of (model, prompt version, question,
reference, answer), so a re-evaluation asks only about answers it has not seen. An answer the judge
could not grade (transport failure, garbage) is counted as unjudged and left out of the accuracy.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from string import Template

from medpo_ray.critics.openai_client import ChatClient, Endpoint, TransportFailure
from medpo_ray.data.record import Record

PROMPT_VERSION = "judge_v1"
SCHEMA = {"type": "object", "properties": {"correct": {"type": "boolean"}}, "required": ["correct"],
          "additionalProperties": False}
_YES_NO = re.compile(r"\b(yes|no)\b", re.I)


def yes_no(text: str) -> str | None:
    """The first "yes" or "no" word of an answer (the regex shortcut), lower-case; None when there is none."""
    m = _YES_NO.search(text or "")
    return m.group(1).lower() if m else None


def parse_verdict(raw: str) -> bool | None:
    """True/False from {"correct": bool}; None for anything else."""
    try:
        obj = json.loads(raw.strip())
    except (ValueError, AttributeError):
        return None
    if isinstance(obj, dict) and set(obj) == {"correct"} and isinstance(obj["correct"], bool):
        return obj["correct"]
    return None


class VerdictCache:
    """Append-only JSONL of {"key", "correct"}; safe for the judge's threads (one lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: dict[str, bool] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self._seen[str(row["key"])] = bool(row["correct"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from a killed run: that answer is asked again

    def get(self, key: str) -> bool | None:
        """The cached verdict, or None."""
        with self._lock:
            return self._seen.get(key)

    def put(self, key: str, correct: bool) -> None:
        """Store and append one verdict."""
        with self._lock:
            self._seen[key] = correct
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps({"key": key, "correct": correct}) + "\n")


class Judge:
    """Grades VQA answers: regex for yes/no ground truths, the LLM (cached) for the rest."""

    def __init__(self, cfg, cache: str | Path | None = None):
        self.cfg = cfg
        self.client = ChatClient(Endpoint.of(cfg))
        self.cache = VerdictCache(cache or cfg.cache)
        self.template = Template(resources.files("medpo_ray.eval").joinpath("prompts", f"{PROMPT_VERSION}.txt")
                                 .read_text())
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def key(self, record: Record, answer: str) -> str:
        """The cache key of one grading."""
        parts = [self.client.model_name(), PROMPT_VERSION, record.prompt, record.target, answer]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def grade(self, record: Record, answer: str) -> bool | None:
        """Whether `answer` is right; None when it could not be graded."""
        truth = yes_no(record.target) if record.target.strip().lower().rstrip(".") in ("yes", "no") else None
        if truth is not None:
            self._count("shortcut")
            return yes_no(answer) == truth
        try:
            key = self.key(record, answer)
        except TransportFailure:
            self._count("unjudged")
            return None
        if (hit := self.cache.get(key)) is not None:
            self._count("cached")
            return hit
        texts = {"question": record.prompt, "reference": record.target, "answer": answer}
        prompt = self.template.substitute({f"{k}_json": json.dumps(v, ensure_ascii=False) for k, v in texts.items()})
        try:
            raw = self.client.complete([{"role": "user", "content": prompt}], SCHEMA, "judge_verdict")
        except TransportFailure:
            self._count("unjudged")
            return None
        verdict = parse_verdict(raw)
        if verdict is None:
            self._count("unjudged")
            return None
        self._count("asked")
        self.cache.put(key, verdict)
        return verdict

    def judge(self, records: Sequence[Record], texts: Mapping[str, str]) -> dict:
        """Accuracy per closed/open VQA split by the judge, and how each answer was graded."""
        items = [(r, texts.get(r.record_id, "")) for r in records if r.task == "vqa"]
        with ThreadPoolExecutor(max_workers=max(1, min(self.cfg.concurrency, len(items)))) as pool:
            grades = list(pool.map(lambda item: self.grade(*item), items))
        right: Counter = Counter()
        total: Counter = Counter()
        for (r, _), g in zip(items, grades, strict=True):
            if g is None:
                continue
            split = "vqa_closed" if r.answer_type == "closed" else "vqa_open"
            total[split] += 1
            right[split] += g
        return {**{k: (right[k] / total[k] if total[k] else None) for k in ("vqa_closed", "vqa_open")},
                "n": dict(total), "graded_by": {k: self.counts[k] for k in ("shortcut", "cached", "asked", "unjudged")},
                "model": self.client.model_name() if self.counts["asked"] or self.counts["cached"] else self.cfg.model}

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self.client.close()
