"""A pipeline stage: identical actors behind a bounded number of in-flight calls, with re-issue on
actor death and a per-stage deadline.

Every stage method returns `(meta, payload)` (called with num_returns=2): the driver fetches only the
small `meta` (ids, counts) and hands the `payload` ref to the next stage, so the payload is put into
the object store once, by its producer. A call that fails because its actor died is re-submitted with
the same argument refs once Ray has restarted the actor (`max_restarts`) and `on_restart` has prepared
it, up to `max_attempts`; a call that exceeds the stage deadline raises `StageError` naming the stage
and its records, instead of an opaque hang.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from actors import metrics
from medpo_ray.ledger import Ledger

_ACTOR_GONE = (RayActorError, ActorDiedError, ActorUnavailableError)


class StageError(RuntimeError):
    """A stage failed for good (hung past its deadline, or kept dying): the run must stop cleanly."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"stage {stage!r}: {message}")
        self.stage = stage


@dataclass
class _Call:
    ids: list[str]
    args: tuple
    actor: int
    meta: ray.ObjectRef
    payload: ray.ObjectRef
    started: float = field(default_factory=time.monotonic)
    attempts: int = 1
    life: int = 0  # which restart of its actor the call was sent to


@dataclass
class Done:
    """A finished stage call: its ids, its fetched meta and the ref of its payload."""

    ids: list[str]
    meta: dict
    payload: ray.ObjectRef
    seconds: float


class StagePool:
    """Routes calls of one stage method over a set of actors, least-loaded first."""

    def __init__(self, name: str, actors: list, method: str, ledger: Ledger, *,
                 max_in_flight: int = 2, deadline_s: float = 300.0, max_attempts: int = 3,
                 on_restart: Callable[[Any], None] | None = None, extra_args: tuple = ()):
        if not actors:
            raise ValueError(f"stage {name!r} needs at least one actor")
        self.name, self.actors, self.method = name, list(actors), method
        self.ledger = ledger
        self.max_in_flight, self.deadline_s, self.max_attempts = max_in_flight, deadline_s, max_attempts
        self.on_restart = on_restart  # e.g. push the current weights into a restarted rollout engine
        self.extra_args = extra_args  # appended to every call (e.g. the sampling spec)
        self._calls: dict[ray.ObjectRef, _Call] = {}
        self._lives = [0] * len(self.actors)  # restarts seen per actor
        self.restarts = 0

    def free_slots(self) -> int:
        """How many more calls may be submitted now (backpressure: 0 means wait)."""
        return self.max_in_flight * len(self.actors) - len(self._calls)

    def in_flight(self) -> int:
        """Calls submitted and not yet collected."""
        return len(self._calls)

    def submit(self, ids: list[str], *args) -> None:
        """Start one call over the records `ids`; args are usually ObjectRefs."""
        load = [0] * len(self.actors)
        for c in self._calls.values():
            load[c.actor] += 1
        actor = min(range(len(self.actors)), key=load.__getitem__)
        self._start(_Call(ids, args, actor, None, None))  # type: ignore[arg-type]
        self.ledger.start(self.name, ids)

    def _start(self, call: _Call) -> None:
        fn = getattr(self.actors[call.actor], self.method)
        call.meta, call.payload = fn.options(num_returns=2).remote(*call.args, *self.extra_args)
        call.started = time.monotonic()
        call.life = self._lives[call.actor]
        self._calls[call.meta] = call

    def wait_refs(self) -> list[ray.ObjectRef]:
        """The refs to pass to ray.wait (one per in-flight call)."""
        return list(self._calls)

    def collect(self, ready: list[ray.ObjectRef]) -> list[Done]:
        """Turn ready meta refs of this stage into Done results; re-submit calls whose actor died."""
        out = []
        for ref in ready:
            call = self._calls.pop(ref, None)
            if call is None:
                continue
            try:
                meta = ray.get(ref)
            except _ACTOR_GONE as e:
                self._retry(call, e)
                continue
            except RayTaskError as e:  # a bug or an unexpected input in the stage: stop, naming it
                cause = e.cause if e.cause is not None else e
                raise StageError(self.name, f"{type(cause).__name__}: {cause} (records {call.ids[:5]})") from e
            self.ledger.finish(self.name, call.ids)
            out.append(Done(call.ids, meta, call.payload, time.monotonic() - call.started))
        return out

    def _retry(self, call: _Call, err: Exception) -> None:
        if call.attempts >= self.max_attempts:
            raise StageError(self.name, f"actor died {call.attempts} times on records {call.ids[:5]}: {err}")
        if call.life == self._lives[call.actor]:  # the first failed call of this death recovers the actor
            self._await_restart(call.actor)
            self._lives[call.actor] += 1
            self.restarts += 1
            metrics.inc("medpo_actor_restarts_total", stage=self.name)
            if self.on_restart is not None:
                self.on_restart(self.actors[call.actor])
        call.attempts += 1
        self.ledger.reissued[self.name] += len(call.ids)
        self._start(call)

    def _await_restart(self, index: int) -> None:
        """Block until Ray has restarted actor `index`: calls sent while it restarts fail (after ~2 s each)
        as unavailable, so a re-issued call would burn its attempts on the restart itself."""
        deadline = time.monotonic() + self.deadline_s
        while True:
            try:
                ray.get(self.actors[index].__ray_ready__.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise StageError(self.name, f"actor {index} did not come back within {self.deadline_s:.0f} s "
                                     "of its death") from None
            except (ActorDiedError, GetTimeoutError) as e:
                raise StageError(self.name, f"actor {index} died and was not restarted: {e}") from None

    def check_deadline(self) -> None:
        """Raise StageError if any call has run longer than the stage deadline."""
        now = time.monotonic()
        for call in self._calls.values():
            if now - call.started > self.deadline_s:
                raise StageError(self.name, f"no answer for {now - call.started:.0f} s (deadline "
                                 f"{self.deadline_s:.0f} s) on records {call.ids[:5]}; the stage is hung")
