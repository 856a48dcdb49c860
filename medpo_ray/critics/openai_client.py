"""One OpenAI-compatible chat client for everything that asks an LLM (the critic, the evaluation judge).

Temperature 0, JSON output requested against a schema when the server supports structured output
(falling back to none when the server refuses `response_format`), timeouts, retries with exponential
backoff and full jitter for transport failures (timeouts, refused connections, 429/5xx), an HTTP body
cut off at a size limit while it streams in. The API key is read from the environment variable the
settings name and sent only in the Authorization header. Failures raise TransportFailure with a bounded
code; callers turn it into an abstention (critic) or a counted unjudged item (judge).
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from medpo_ray.errors import MedpoError

log = logging.getLogger(__name__)
_ENVELOPE_BYTES = 65536  # room for the JSON envelope around the answer text
PREFLIGHT_TIMEOUT_S = 10.0
T = TypeVar("T")


class TransportFailure(Exception):
    """A request that failed after its retries: `code` is bounded (timeout, connection, http_error, ...)."""

    def __init__(self, code: str, detail: str, retry: bool):
        super().__init__(detail)
        self.code, self.detail, self.retry = code, detail, retry


@dataclass(frozen=True)
class Endpoint:
    """Where and how to ask (CriticConfig and EvalConfig's judge fill it)."""

    base_url: str
    model: str = ""
    api_key_env: str = "MEDPO_CRITIC_API_KEY"
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    max_answer_chars: int = 16384
    max_tokens: int = 512
    structured_output: str = "auto"  # auto | json_schema | json_object | none

    @classmethod
    def of(cls, cfg) -> Endpoint:
        """The endpoint fields of a config section that has them."""
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__})


class ChatClient:
    """Chat completions against one endpoint; thread-safe (a pool of threads shares it)."""

    def __init__(self, endpoint: Endpoint, sleep: Callable[[float], None] = time.sleep,
                 count: Callable[[str], None] = lambda key: None):
        self.endpoint = endpoint
        self.structured = endpoint.structured_output
        self._sleep, self._count = sleep, count
        self._model = endpoint.model
        self._model_lock = threading.Lock()
        self._client = httpx.Client(timeout=httpx.Timeout(endpoint.timeout_s), follow_redirects=False)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._client.close()

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.endpoint.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _url(self, path: str) -> str:
        return self.endpoint.base_url.rstrip("/") + path

    def request(self, method: str, path: str, payload: dict | None = None, timeout_s: float | None = None) -> dict:
        """One HTTP request, its JSON body; TransportFailure on any failure (no retry here)."""
        # Streamed so that an oversized body is cut off at the limit instead of read into memory.
        cap = self.endpoint.max_answer_chars * 4 + _ENVELOPE_BYTES
        timeout_s = timeout_s or self.endpoint.timeout_s
        deadline = time.monotonic() + timeout_s
        try:
            with self._client.stream(method, self._url(path), json=payload, headers=self._headers(),
                                     timeout=httpx.Timeout(timeout_s)) as resp:
                body = bytearray()
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > cap:
                        raise TransportFailure("too_large", f"HTTP body over {cap} bytes", retry=False)
                    if time.monotonic() > deadline:
                        raise TransportFailure("timeout", f"body not complete after {timeout_s} s", True)
                status = resp.status_code
        except httpx.TimeoutException as e:
            raise TransportFailure("timeout", f"{type(e).__name__} after {timeout_s} s", True) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
            raise TransportFailure("connection", f"{type(e).__name__}: {str(e)[:200]}", True) from None
        except httpx.HTTPError as e:  # proxy, TLS, protocol errors: retrying will not help
            raise TransportFailure("connection", f"{type(e).__name__}: {str(e)[:200]}", False) from None
        text = body.decode("utf-8", errors="replace")
        if status != 200:
            retry = status == 429 or status >= 500
            raise TransportFailure("http_error", f"HTTP {status}: {text[:300]}", retry)
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise TransportFailure("bad_response", f"body is not JSON: {text[:120]!r}", False) from None

    def with_retries(self, fn: Callable[[], T]) -> T:
        """fn(), retried on retryable transport failures with exponential backoff and jitter."""
        for attempt in range(self.endpoint.max_retries + 1):
            try:
                return fn()
            except TransportFailure as e:
                if not e.retry or attempt == self.endpoint.max_retries:
                    raise
                self._count(f"retry_{e.code}")
                # Exponential backoff with full jitter, so that many clients do not retry in lockstep.
                delay = min(self.endpoint.backoff_max_s, self.endpoint.backoff_s * 2 ** attempt) * random.uniform(0.5, 1.0)
                log.warning("LLM request failed (%s: %s); retry %d in %.2f s", e.code, e.detail[:120],
                            attempt + 1, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def model_name(self) -> str:
        """The configured model, else the first the server lists (asked once)."""
        with self._model_lock:  # one GET /models, not one per worker thread
            if not self._model:
                body = self.with_retries(lambda: self.request("GET", "/models"))
                try:
                    self._model = body["data"][0]["id"]
                except (KeyError, IndexError, TypeError):
                    raise TransportFailure("no_model", f"GET /models listed no model: {str(body)[:200]}",
                                           False) from None
        return self._model

    def _payload(self, messages: list[dict[str, str]], schema: dict | None, name: str) -> dict:
        payload = {"model": self._model, "messages": messages, "temperature": 0.0,
                   "max_tokens": self.endpoint.max_tokens}
        if schema is not None and self.structured in ("auto", "json_schema"):
            payload["response_format"] = {"type": "json_schema", "json_schema": {
                "name": name, "schema": schema, "strict": True}}
        elif schema is not None and self.structured == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def complete(self, messages: list[dict[str, str]], schema: dict | None = None, name: str = "answer") -> str:
        """The assistant's text for `messages`, constrained to `schema` where the server can."""
        self.model_name()

        def once() -> str:
            try:
                body = self.request("POST", "/chat/completions", self._payload(messages, schema, name))
            except TransportFailure as e:
                # "auto": a server without structured output rejects response_format with a 400; ask
                # again without it (the caller still validates the answer against the schema).
                if self.structured == "auto" and e.code == "http_error" and e.detail.startswith("HTTP 400") \
                        and "response_format" in e.detail:
                    log.warning("LLM server does not take response_format json_schema; sending none")
                    self.structured = "none"
                    body = self.request("POST", "/chat/completions", self._payload(messages, schema, name))
                else:
                    raise
            try:
                content = body["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise TransportFailure("bad_response", f"no choices[0].message.content in {str(body)[:200]}",
                                       False) from None
            return content if isinstance(content, str) else ""

        return self.with_retries(once)

    def preflight(self, what: str) -> str:
        """One listing before a run starts: the endpoint answers and serves the configured model. Returns
        the model's name; raises MedpoError naming what is wrong (`what` names the config section)."""
        where = f"{what}.base_url {self.endpoint.base_url!r}"
        try:  # a listing answers at once from a live server: a short wait, whatever timeout_s allows
            body = self.request("GET", "/models", timeout_s=min(self.endpoint.timeout_s, PREFLIGHT_TIMEOUT_S))
        except TransportFailure as e:
            raise MedpoError(f"{where} does not answer GET /models ({e.code}: {e.detail[:200]}); start the "
                             f"server or fix {what}.base_url / {what}.api_key_env") from None
        try:
            served = [m["id"] for m in body["data"]]
        except (KeyError, TypeError):
            raise MedpoError(f"{where}: GET /models is not an OpenAI model list: {str(body)[:200]}") from None
        if not served:
            raise MedpoError(f"{where} serves no model")
        if self.endpoint.model and self.endpoint.model not in served:
            raise MedpoError(f"{where} does not serve {what}.model {self.endpoint.model!r} (it serves {served[:5]})")
        return self.endpoint.model or served[0]
