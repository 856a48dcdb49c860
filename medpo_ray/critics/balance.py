"""Balanced branch-B counterfactuals: each swap is used in both directions about equally often.

Why this exists: on-policy pairs are mostly branch B (the policy was right; y- is a counterfactual).
When the counterfactuals only ever go one way (absent -> present on reports, "No" -> "A"; yes -> no on
mostly-"yes" VQA), the preference term pushes one word down at one kind of position in every pair and
never up. A small policy cannot tie that push to the image, so it learns to avoid the word everywhere:
measured here as the log-prob of a sentence-opening " A" falling from -1.0 to -3.9 over 300 steps and the
model inventing "Two lesions ..." instead (RESULTS.md). With every swap mirrored, a word pushed down
where it is wrong is pushed up as often where it is right, and what is left to learn is the image.

Every counterfactual option has a key "kind:old>new" ("presence:no>a", "laterality:right>left",
"vqa-count:two>one") or "kind:up"/"kind:down" for measurements. The critic picks a kind uniformly among
those the answer offers, then an option uniformly within it (both by a stable hash of the record id), and
keeps it with probability keep[key]; a dropped one is an abstention with code "balance". The keep rates
come from `fit_keep_rates` over the expected use of each key on gold answers (correct by definition, so
each would get a counterfactual): keep[k] = min(U[k], U[mirror]) / U[k]. A key whose mirror never
occurs is never used; keys the table does not name are kept.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")
_FLIP = {"up": "down", "down": "up"}
_RESOLUTION = 1_000_000


def kind_of(key: str) -> str:
    """The kind part of a key ("presence" of "presence:no>a")."""
    return key.split(":", 1)[0]


def mirror(key: str) -> str:
    """The same swap in the other direction: "kind:a>b" -> "kind:b>a", "kind:up" -> "kind:down"."""
    kind, direction = key.split(":", 1)
    if ">" in direction:
        a, b = direction.split(">", 1)
        return f"{kind}:{b}>{a}"
    return f"{kind}:{_FLIP[direction]}"


def choose(options: Sequence[tuple[str, T]], seed: int) -> tuple[str, T]:
    """One (key, option): a kind uniformly among those offered, then an option uniformly within it."""
    kinds = sorted({kind_of(k) for k, _ in options})
    kind = kinds[seed % len(kinds)]
    within = [o for o in options if kind_of(o[0]) == kind]
    return within[(seed // len(kinds)) % len(within)]


def expected_use(keys: Sequence[str]) -> dict[str, float]:
    """The probability `choose` gives each key, for an answer offering options with these keys."""
    kinds = Counter(kind_of(k) for k in keys)
    out: dict[str, float] = {}
    for k in keys:
        out[k] = out.get(k, 0.0) + 1.0 / (len(kinds) * kinds[kind_of(k)])
    return out


def total_use(uses: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Expected uses summed over answers."""
    total: Counter[str] = Counter()
    for use in uses:
        total.update(use)
    return dict(total)


def keep_from_totals(total: Mapping[str, float]) -> dict[str, float]:
    """keep[k] = min(U[k], U[mirror k]) / U[k] for every key used."""
    return {k: round(min(u, total.get(mirror(k), 0.0)) / u, 6) for k, u in sorted(total.items()) if u > 0}


def fit_keep_rates(uses: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """keep[k] = min(U[k], U[mirror k]) / U[k], U summed over answers' `expected_use`."""
    return keep_from_totals(total_use(uses))


class OnPolicyBalance:
    """Keep rates refitted on the counterfactuals the policy's right answers actually offer.

    The gold answers' mix is only a prior: the answers a policy gets right lean towards the easy cases
    (a clear side more often than a measured lesion), so rates fitted on gold data still leave
    "presence:no>a" about twice as frequent as its mirror on-policy (measured). The driver adds each
    step's offered keys (chosen before thinning) and sends the refitted rates to the span editors; the
    prior counts as `prior_pairs` answers, so the first steps are not decided by a handful of pairs.
    """

    def __init__(self, prior: Mapping[str, float], prior_pairs: float = 100.0,
                 offered: Mapping[str, float] | None = None):
        scale = prior_pairs / max(sum(prior.values()), 1e-12)
        self.prior = {k: v * scale for k, v in prior.items()}
        self.offered: Counter[str] = Counter(offered or {})

    def observe(self, offered: Mapping[str, int]) -> None:
        """Count one step's offered counterfactual keys."""
        self.offered.update(offered)

    def rates(self) -> dict[str, float]:
        """The keep rates for prior + observed offers."""
        total = Counter(self.prior)
        total.update(self.offered)
        return keep_from_totals(total)


def kept(key: str, keep: Mapping[str, float] | None, seed: int) -> bool:
    """Whether the option with this key survives its keep rate (a draw from the hash's upper bits)."""
    if keep is None:
        return True
    draw = ((seed >> 24) % _RESOLUTION) / _RESOLUTION
    return draw < keep.get(key, 1.0)

