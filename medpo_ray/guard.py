"""A guard against harm: every `guard.every` learner steps, probe the policy on a fixed held-out slice.

On-policy training can make a model worse while its training reward climbs (lopsided counterfactuals
did exactly that here: RESULTS.md). The probe measures what the product promises, on records training
never sees, through the same engines the rollouts use:
- greedy answers to the slice, scored by the reference critic (edits per answer: how much it would
  correct; never an LLM critic, so a probe cannot hang on a remote service) and
  by exact structured findings (reports) and exact-match accuracy (VQA);
- the learner's log-prob of every token of a fixed set of gold answers, averaged per token type: a
  word the policy is being taught to avoid everywhere shows up as one type falling while the rest stay.
The first probe (before any step) is the warm start's baseline. A later probe is "worse than the warm
start" when edits per answer rise or exact findings fall by more than `guard.margin`, or when a token
type with at least `guard.min_token_count` occurrences falls by more than `guard.max_token_drop` nats;
the driver then warns loudly (log line, `medpo_policy_regression`, the MedpoPolicyWorseThanWarmStart
alert). The best probe so far (fewest edits per answer, then most exact findings) names the checkpoint
`checkpoints/best` points to.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from medpo_ray.config import GuardConfig
from medpo_ray.data.record import Record
from medpo_ray.eval.structured import score_outputs, score_vqa


def score_answers(records: Sequence[Record], texts: Mapping[str, str], critic, tol: float) -> dict:
    """Critic edits per answer (0 when right or abstaining), exact findings of the reports and exact-match
    accuracy of the VQA answers, over the records (a record without an answer counts as wrong)."""
    verdicts = critic.review_many([(r, texts.get(r.record_id, "")) for r in records])
    edits = [len(v.edits) if v.verdict == "wrong" else 0 for v in verdicts]
    reports = [r for r in records if r.task == "report"]
    vqa = [r for r in records if r.task == "vqa"]
    exact = score_outputs(reports, dict(texts), tol)["exact"] if reports else None
    vqa_ok = [score_vqa(texts.get(r.record_id), r) for r in vqa]
    return {"edits_per_answer": sum(edits) / len(edits) if edits else 0.0, "exact": exact,
            "vqa_accuracy": sum(next(iter(s.values()))[0] for s in vqa_ok) / len(vqa_ok) if vqa_ok else None,
            "abstain": sum(v.verdict == "abstain" for v in verdicts) / max(len(verdicts), 1),
            "answers": len(records)}


def token_means(rows: Iterable[Sequence[tuple[str, float]]]) -> dict[str, tuple[float, int]]:
    """Mean log-prob and count per token text over scored gold answers [(token text, log-prob), ...]."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for row in rows:
        for text, lp in row:
            sums[text][0] += lp
            sums[text][1] += 1
    return {t: (s / n, int(n)) for t, (s, n) in sums.items()}


@dataclass
class Guard:
    """The probes of one run: the warm start's baseline, the best step so far, and each verdict."""

    cfg: GuardConfig
    baseline: dict | None = None
    best: dict | None = None
    history: list[dict] = field(default_factory=list)

    def observe(self, step: int, scores: dict, tokens: Mapping[str, tuple[float, int]]) -> dict:
        """The verdict on one probe: its scores, the largest token drop since the baseline, whether it is
        the best so far and whether (and why) it is worse than the warm start."""
        row = {"step": step, **scores, "tokens": {t: round(m, 4) for t, (m, _) in tokens.items()}}
        drop_token, drop = None, 0.0
        if self.baseline is None:
            self.baseline = {**row, "counts": {t: n for t, (_, n) in tokens.items()}}
        else:
            base = self.baseline
            for t, (m, n) in tokens.items():
                if t in base["tokens"] and min(n, base["counts"].get(t, 0)) >= self.cfg.min_token_count:
                    if base["tokens"][t] - m > drop:
                        drop_token, drop = t, base["tokens"][t] - m
        reasons = self._reasons(row, drop_token, drop)
        verdict = {**row, "max_token_drop": round(drop, 4), "dropped_token": drop_token,
                   "regressed": bool(reasons), "reasons": reasons}
        verdict["best"] = self.best is None or _key(verdict) < _key(self.best)
        if verdict["best"]:
            self.best = {k: verdict[k] for k in ("step", "edits_per_answer", "exact", "vqa_accuracy")}
        self.history.append({k: v for k, v in verdict.items() if k != "tokens"})
        return verdict

    def _reasons(self, row: dict, drop_token: str | None, drop: float) -> list[str]:
        if self.baseline is None or row["step"] == self.baseline["step"]:
            return []
        base, m, out = self.baseline, self.cfg.margin, []
        if row["edits_per_answer"] > base["edits_per_answer"] + m:
            out.append(f"critic edits per answer {row['edits_per_answer']:.3f} vs {base['edits_per_answer']:.3f} "
                       "at the warm start")
        for key, name in (("exact", "exact findings"), ("vqa_accuracy", "VQA accuracy")):
            if row[key] is not None and base[key] is not None and row[key] < base[key] - m:
                out.append(f"{name} {row[key]:.3f} vs {base[key]:.3f} at the warm start")
        if drop > self.cfg.max_token_drop:
            out.append(f"token {drop_token!r} log-prob fell {drop:.2f} nats on the gold probe answers "
                       f"(limit {self.cfg.max_token_drop})")
        return out

    def state(self) -> dict:
        """What a checkpoint keeps, so a resumed run compares with the same baseline and best."""
        return {"baseline": self.baseline, "best": self.best, "history": self.history}

    @classmethod
    def restore(cls, cfg: GuardConfig, state: dict | None) -> Guard:
        """A guard from `state()` (a fresh one when None)."""
        state = state or {}
        return cls(cfg, state.get("baseline"), state.get("best"), list(state.get("history", [])))


def _key(v: Mapping) -> tuple:
    # Fewer critic edits first, then more exact findings and VQA answers, then the earlier step.
    return (round(v["edits_per_answer"], 6), -(v["exact"] or 0.0), -(v["vqa_accuracy"] or 0.0), v["step"])
