"""The LLM critic: any OpenAI-compatible chat endpoint (`vllm serve`, a hosted API, ...).

A versioned prompt over the shared chat client (openai_client.py: temperature 0, structured output,
timeouts, retries with backoff and jitter), and a thread pool bounded by `concurrency` in review_many. It
never raises for a bad answer or a dead server: it abstains with a reason code and counts it.

With structured output, each request's schema also pins every edit's `old` to a phrase of y0 (one to four
words that occur there exactly once; `critic.old_from_answer`) and its `new` to at most the per-sentence
word limit, so the server's grammar makes the commonest critic failures ("old not in y0", rewriting a
whole sentence) impossible instead of leaving them to be refused afterwards.
"""
from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from string import Template

from medpo_ray.config import CriticConfig
from medpo_ray.critics.answer import AnswerLimits, abstain, load_schema, reason_code, validate_answer
from medpo_ray.critics.base import Critic, CriticVerdict
from medpo_ray.critics.openai_client import ChatClient, Endpoint, TransportFailure
from medpo_ray.data.record import Record
from medpo_ray.errors import MedpoError

log = logging.getLogger(__name__)
MAX_OLD_CHOICES = 1024  # phrases offered as `old`; a longer answer falls back to the schema's pattern
_PHRASE_WORDS = 4


def load_prompts(version: str) -> dict[str, str]:
    """The prompt files of one version (system, report, vqa)."""
    root = resources.files("medpo_ray.critics").joinpath("prompts", version)
    if not root.is_dir():
        raise MedpoError(f"critic.prompt_version: no prompt folder {version!r} in medpo_ray/critics/prompts")
    return {name: root.joinpath(f"{name}.txt").read_text() for name in ("system", "report", "vqa")}


def build_messages(prompts: dict[str, str], record: Record, y0: str) -> list[dict[str, str]]:
    """The chat messages asking for a verdict on y0 (system + one user turn)."""
    findings = json.dumps(record.findings, sort_keys=True, default=str) if record.findings else "{}"
    template = Template(prompts["vqa" if record.task == "vqa" else "report"])
    # v2 prompts take every untrusted text (answer, reference, question) as a JSON string, which the text
    # cannot close: quotes, newlines and control characters come out escaped. v1 pastes them raw.
    texts = {"reference": record.target, "answer": y0, "question": record.prompt}
    user = template.substitute(findings=findings, **texts,
                               **{f"{k}_json": json.dumps(str(v), ensure_ascii=False) for k, v in texts.items()})
    return [{"role": "system", "content": prompts["system"].strip()}, {"role": "user", "content": user}]


class OpenAICritic(Critic):
    """Critic over an OpenAI-compatible `/chat/completions` endpoint."""

    name = "openai"

    def __init__(self, cfg: CriticConfig, sleep: Callable[[float], None] = time.sleep):
        self.cfg = cfg
        self.prompts = load_prompts(cfg.prompt_version)
        self.schema = load_schema(cfg.prompt_version)
        self.limits = AnswerLimits(cfg.max_answer_chars, cfg.max_edits, cfg.max_changed_words_per_sentence)
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self.client = ChatClient(Endpoint.of(cfg), sleep=sleep, count=self._count)

    def counts(self) -> Counter:
        """Answers by outcome: verdicts ("wrong", "right"), abstention codes, and "retry_<code>"."""
        with self._lock:
            return Counter(self._counts)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self.client.close()

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def preflight(self) -> str:
        """One question to the endpoint before a run starts: it answers, lists models, and serves the one
        configured (critic.model). Returns the model's name; raises MedpoError naming what is wrong, so an
        unreachable or misconfigured critic stops the run before any actor or prompt is spent on it."""
        return self.client.preflight("critic")

    def request_schema(self, y0: str) -> dict:
        """The answer schema for a verdict on y0: `old` one of y0's phrases (when old_from_answer), `new`
        at most the per-sentence word limit."""
        if not self.cfg.old_from_answer:
            return self.schema
        schema = copy.deepcopy(self.schema)
        item = schema["properties"]["edits"]["items"]["properties"]
        phrases = answer_phrases(y0, item["old"].get("pattern"))
        if phrases:
            item["old"] = {"type": "string", "enum": phrases}
        words = self.limits.max_changed_words_per_sentence
        word = r"[A-Za-z0-9.,;:()/%+-]{1,40}"
        item["new"] = {"type": "string", "pattern": rf"^(?:{word}(?: {word}){{0,{words - 1}}})?$"}
        return schema

    def review(self, record: Record, y0: str) -> CriticVerdict:
        """Ask the endpoint about y0 and return its checked verdict (abstain on any failure)."""
        try:
            raw = self.client.complete(build_messages(self.prompts, record, y0), self.request_schema(y0),
                                       "critic_verdict")
        except TransportFailure as e:
            verdict = abstain(e.code, e.detail, self.name)
        else:
            verdict = validate_answer(raw, y0, self.limits, self.schema, self.name)
        self._count(verdict.verdict if verdict.verdict != "abstain" else reason_code(verdict))
        if verdict.verdict == "abstain":
            log.info("critic abstained on record %r: %s", record.record_id, verdict.reason[:200])
        return verdict

    def review_many(self, items: Sequence[tuple[Record, str]]) -> list[CriticVerdict]:
        """Judge many answers with at most `concurrency` requests in flight, in input order."""
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(items))) as pool:
            return list(pool.map(lambda item: self.review_timed(*item), items))


def answer_phrases(y0: str, pattern: str | None = None) -> list[str]:
    """Runs of one to four words of y0 that occur in it exactly once (and fit `pattern`), in reading order;
    [] when there are more than MAX_OLD_CHOICES."""
    words = list(re.finditer(r"\S+", y0))
    fits = re.compile(pattern) if pattern else None
    seen: dict[str, None] = {}
    for i in range(len(words)):
        for j in range(i, min(i + _PHRASE_WORDS, len(words))):
            for phrase in {y0[words[i].start():words[j].end()], y0[words[i].start():words[j].end()].rstrip(".,;:")}:
                if phrase and y0.count(phrase) == 1 and (fits is None or fits.match(phrase)):
                    seen.setdefault(phrase)
    return list(seen) if len(seen) <= MAX_OLD_CHOICES else []
