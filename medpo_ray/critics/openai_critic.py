"""The LLM critic: any OpenAI-compatible chat endpoint (`vllm serve`, a hosted API, ...).

Temperature 0, a versioned prompt, JSON output requested against the answer schema when the server
supports structured output, timeouts, retries with exponential backoff and jitter for transport
failures (timeouts, refused connections, 429/5xx), and a thread pool bounded by `concurrency` in
review_many. It never raises for a bad answer or a dead server: it abstains with a reason code and
counts it. The API key is read from the environment variable named in the config and sent only in
the Authorization header.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from string import Template
from typing import TypeVar

import httpx

from medpo_ray.config import CriticConfig
from medpo_ray.critics.answer import AnswerLimits, abstain, load_schema, reason_code, validate_answer
from medpo_ray.critics.base import Critic, CriticVerdict
from medpo_ray.data.record import Record
from medpo_ray.errors import MedpoError

log = logging.getLogger(__name__)
_ENVELOPE_BYTES = 65536  # room for the JSON envelope around the answer text
PREFLIGHT_TIMEOUT_S = 10.0
T = TypeVar("T")


class _TransportFailure(Exception):
    def __init__(self, code: str, detail: str, retry: bool):
        super().__init__(detail)
        self.code, self.detail, self.retry = code, detail, retry


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
        self._sleep = sleep
        self._structured = cfg.structured_output
        self._model = cfg.model
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._counts: Counter = Counter()
        self._client = httpx.Client(timeout=httpx.Timeout(cfg.timeout_s), follow_redirects=False)

    def counts(self) -> Counter:
        """Answers by outcome: verdicts ("wrong", "right"), abstention codes, and "retry_<code>"."""
        with self._lock:
            return Counter(self._counts)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _url(self, path: str) -> str:
        return self.cfg.base_url.rstrip("/") + path

    def _request(self, method: str, path: str, payload: dict | None = None, timeout_s: float | None = None) -> dict:
        # Streamed so that an oversized body is cut off at the limit instead of read into memory.
        cap = self.cfg.max_answer_chars * 4 + _ENVELOPE_BYTES
        timeout_s = timeout_s or self.cfg.timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            with self._client.stream(method, self._url(path), json=payload, headers=self._headers(),
                                     timeout=httpx.Timeout(timeout_s)) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise _TransportFailure("too_large", f"HTTP body over {cap} bytes", retry=False)
                    if time.monotonic() > deadline:
                        raise _TransportFailure("timeout", f"body not complete after {timeout_s} s", True)
                status = resp.status_code
        except httpx.TimeoutException as e:
            raise _TransportFailure("timeout", f"{type(e).__name__} after {timeout_s} s", True) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            raise _TransportFailure("connection", f"{type(e).__name__}: {str(e)[:200]}", True) from None
        except httpx.HTTPError as e:  # proxy, TLS, protocol errors: retrying will not help
            raise _TransportFailure("connection", f"{type(e).__name__}: {str(e)[:200]}", False) from None
        text = body.decode("utf-8", errors="replace")
        if status != 200:
            retry = status == 429 or status >= 500
            raise _TransportFailure("http_error", f"HTTP {status}: {text[:300]}", retry)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise _TransportFailure("bad_response", f"body is not JSON: {text[:120]!r}", False) from None

    def _with_retries(self, fn: Callable[[], T]) -> T:
        for attempt in range(self.cfg.max_retries + 1):
            try:
                return fn()
            except _TransportFailure as e:
                if not e.retry or attempt == self.cfg.max_retries:
                    raise
                self._count(f"retry_{e.code}")
                # Exponential backoff with full jitter, so that many editors do not retry in lockstep.
                delay = min(self.cfg.backoff_max_s, self.cfg.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                log.warning("critic request failed (%s: %s); retry %d in %.2f s", e.code, e.detail[:120],
                            attempt + 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def _model_name(self) -> str:
        with self._model_lock:  # one GET /models, not one per worker thread
            if not self._model:
                self._model = self._discover_model()
        return self._model

    def _discover_model(self) -> str:
        body = self._with_retries(lambda: self._request("GET", "/models"))
        try:
            return body["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            raise _TransportFailure("no_model", f"GET /models listed no model: {str(body)[:200]}", False) from None

    def _payload(self, messages: list[dict[str, str]]) -> dict:
        payload = {"model": self._model, "messages": messages, "temperature": 0.0,
                   "max_tokens": self.cfg.max_tokens}
        if self._structured in ("auto", "json_schema"):
            payload["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "critic_verdict", "schema": self.schema, "strict": True}}
        elif self._structured == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _complete(self, messages: list[dict[str, str]]) -> str:
        self._model_name()

        def once() -> str:
            try:
                body = self._request("POST", "/chat/completions", self._payload(messages))
            except _TransportFailure as e:
                # "auto": a server without structured output rejects response_format with a 400; ask
                # again without it (the answer is still validated against the schema here).
                if self._structured == "auto" and e.code == "http_error" and e.detail.startswith("HTTP 400") \
                        and "response_format" in e.detail:
                    log.warning("critic server does not take response_format json_schema; sending none")
                    self._structured = "none"
                    body = self._request("POST", "/chat/completions", self._payload(messages))
                else:
                    raise
            try:
                content = body["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise _TransportFailure("bad_response", f"no choices[0].message.content in {str(body)[:200]}",
                                        False) from None
            return content if isinstance(content, str) else ""

        return self._with_retries(once)

    def preflight(self) -> str:
        """One question to the endpoint before a run starts: it answers, lists models, and serves the one
        configured (critic.model). Returns the model's name; raises MedpoError naming what is wrong, so an
        unreachable or misconfigured critic stops the run before any actor or prompt is spent on it."""
        where = f"critic.base_url {self.cfg.base_url!r}"
        try:  # a listing answers at once from a live server: a short wait, whatever critic.timeout_s allows
            body = self._request("GET", "/models", timeout_s=min(self.cfg.timeout_s, PREFLIGHT_TIMEOUT_S))
        except _TransportFailure as e:
            raise MedpoError(f"{where} does not answer GET /models ({e.code}: {e.detail[:200]}); start the "
                             "critic server or fix critic.base_url / critic.api_key_env") from None
        try:
            served = [m["id"] for m in body["data"]]
        except (KeyError, TypeError):
            raise MedpoError(f"{where}: GET /models is not an OpenAI model list: {str(body)[:200]}") from None
        if not served:
            raise MedpoError(f"{where} serves no model")
        if self.cfg.model and self.cfg.model not in served:
            raise MedpoError(f"{where} does not serve critic.model {self.cfg.model!r} (it serves {served[:5]})")
        return self.cfg.model or served[0]

    def review(self, record: Record, y0: str) -> CriticVerdict:
        """Ask the endpoint about y0 and return its checked verdict (abstain on any failure)."""
        try:
            raw = self._complete(build_messages(self.prompts, record, y0))
        except _TransportFailure as e:
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
