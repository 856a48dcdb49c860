"""What a stage call says about its records: the one typed result every stage returns beside its payload.

Every stage (rollout, editor, corruption) answers a call over some record ids with `(StageOutcome,
payload)`: `kept` are the ids that go on, in the payload's order; `dropped` maps each id that stops here to
its reason code ("image: cannot decode", "abstain", "stale"); `versions` gives the policy version that
wrote each kept record's answer. The driver fetches only this small object and passes the payload's
handle on; one accounting path (`streaming/steps.py`) serves every stage.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StageOutcome:
    """One stage call's result, by record id."""

    stage: str
    kept: tuple[str, ...]
    dropped: dict[str, str] = field(default_factory=dict)  # id -> "reason" or "reason: detail"
    versions: dict[str, int] = field(default_factory=dict)  # kept id -> policy version of its answer
    kinds: dict[str, str] = field(default_factory=dict)  # editor: kept id -> pair kind ("A:laterality")
    offered: dict[str, int] = field(default_factory=dict)  # editor: counterfactual keys the critic chose
    seconds: float = 0.0  # time the call computed (inside the actor)
    finished: float = 0.0  # wall-clock time (epoch seconds) the computation ended, for the stage timeline
    audit: tuple[dict, ...] = ()  # editor: a row per answer judged; corruption: x~'s columns (streaming/audit.py)

    def __post_init__(self) -> None:
        both = set(self.kept) & set(self.dropped)
        if both:
            raise ValueError(f"stage {self.stage!r}: ids both kept and dropped: {sorted(both)[:5]}")

    def interval(self) -> tuple[str, float, float]:
        """(stage, start, end) of the computation, in epoch seconds."""
        return self.stage, self.finished - self.seconds, self.finished

    @staticmethod
    def code(reason: str) -> str:
        """The reason's code, without its detail: "image: cannot decode" -> "image"."""
        return str(reason).split(":")[0].strip() or "unknown"
