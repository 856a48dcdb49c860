"""The Ray side of the guard (medpo_ray/guard.py): run a probe through the Fleet, judge it, warn.

It asks the rollout engines for greedy answers to the held-out slice and the learner group for the
log-probs of the gold probe answers, then records the verdict as metrics and, when the policy is worse
than its warm start, says so loudly. The judging itself is the pure library's (medpo_ray/guard.py).
"""
from __future__ import annotations

import sys
import time

import ray

from actors import driver_metrics
from medpo_ray.config import Config
from medpo_ray.critics.reference import ReferenceCritic
from medpo_ray.eval.suite import held_out
from medpo_ray.guard import Guard, score_answers, token_means

# Verdict fields copied into metrics.jsonl as probe_<key>.
PROBE_KEYS = ("edits_per_answer", "exact", "vqa_accuracy", "max_token_drop", "dropped_token", "regressed", "best")


class GuardProbe:
    """The probe set of one run and its Guard; `probe(step)` runs one probe and returns the verdict."""

    def __init__(self, cfg: Config, fleet, records: list):
        self.cfg, self.fleet = cfg, fleet
        self.records = held_out(records, cfg.guard.studies)
        self.gold = held_out(records, min(cfg.guard.logprob_studies, cfg.guard.studies))
        self.gold_ref = ray.put(self.gold) if self.gold else None
        # Always the reference rules (exact where the records carry structured findings or a target answer,
        # abstaining elsewhere): the probe runs in the driver and must never wait on a remote LLM critic, and
        # the gold baseline's "edits" would be rewrites. No keep rates: only its corrections count here.
        self.critic = ReferenceCritic(cfg.critic.measurement_tolerance_mm, cfg.critic.max_changed_words_per_sentence)
        self.guard = Guard(cfg.guard)

    def probe(self, step: int) -> dict:
        """Answer the slice with the engines' newest weights, score the gold answers with the learner's,
        judge against the warm start; metrics, a log line, and a loud warning when worse."""
        t0 = time.monotonic()
        texts, versions = self.fleet.probe_answers(self.records)
        if versions - {step}:
            raise RuntimeError(f"guard probe at step {step}: answers came from policy versions {sorted(versions)}")
        rows = self.fleet.learners.gold_logprobs(self.gold_ref) if self.gold_ref is not None else []
        scores = score_answers(self.records, texts, self.critic, self.cfg.critic.measurement_tolerance_mm)
        verdict = self.guard.observe(step, scores, token_means(rows))
        driver_metrics.probe(verdict)
        line = (f"[guard] step {step}: critic edits/answer {verdict['edits_per_answer']:.3f}, exact findings "
                f"{_fmt(verdict['exact'])}, VQA {_fmt(verdict['vqa_accuracy'])}, largest token drop "
                f"{verdict['max_token_drop']:.2f} nats ({verdict['dropped_token']!r}) over {scores['answers']} "
                f"held-out answers in {time.monotonic() - t0:.1f} s" + (" [best so far]" if verdict["best"] else ""))
        print(line, file=sys.stderr, flush=True)
        if verdict["regressed"]:
            best = self.guard.best
            print(f"[guard] WARNING: the policy at step {step} is worse than its warm start: "
                  + "; ".join(verdict["reasons"]) + f". Best probe so far: step {best['step']} "
                  + ("(the warm start itself)" if best["step"] == 0 else "(checkpoints/best)") + ".",
                  file=sys.stderr, flush=True)
        return verdict

    def summary(self, model_dir: str, out) -> dict:
        """What summary.json says about the guard: the best step and the model to use, every probe."""
        best = self.guard.best
        if best is None:
            return {}
        path = model_dir if best["step"] == 0 else str(out / "checkpoints" / f"step-{best['step']:06d}" / "model")
        return {"best_step": best["step"], "best_model": path, "probes": self.guard.history}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
