"""Balanced counterfactuals: every swap the reference critic uses on right answers is used about as often
in the other direction, on reports and VQA, so no word is only ever pushed down."""
from collections import Counter

import pytest

from medpo_ray.config import CriticConfig
from medpo_ray.critics import balance, reference_keep_rates
from medpo_ray.critics.reference import ReferenceCritic
from tests.unit.generated import generated_records

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def records():
    return generated_records(400, 11)


def test_mirror_and_choose():
    assert balance.mirror("presence:no>a") == "presence:a>no"
    assert balance.mirror("vqa-measurement:up") == "vqa-measurement:down"
    options = [("size:small>moderate", 1), ("presence:no>a", 2), ("presence:a>no", 3)]
    picks = Counter(balance.choose(options, seed)[0] for seed in range(600))
    # A kind uniformly, then an option within it.
    assert picks["size:small>moderate"] == 300 and picks["presence:no>a"] == picks["presence:a>no"] == 150
    assert balance.expected_use([k for k, _ in options]) == {
        "size:small>moderate": 0.5, "presence:no>a": 0.25, "presence:a>no": 0.25}


def test_keep_rates_equalise_each_swap_with_its_mirror():
    uses = [{"presence:no>a": 1.0}, {"presence:no>a": 0.5, "presence:a>no": 0.5}, {"count:two>three": 1.0}]
    keep = balance.fit_keep_rates(uses)
    assert keep == {"count:two>three": 0.0, "presence:a>no": 1.0, "presence:no>a": pytest.approx(0.5 / 1.5)}


def test_right_answers_get_counterfactuals_balanced_in_both_directions(records):
    keep = reference_keep_rates(CriticConfig(), records)
    critic = ReferenceCritic(keep_rates=keep)
    used, codes = Counter(), Counter()
    for r in records:
        v = critic.review(r, r.target)  # gold answers are right: each gets a counterfactual or abstains
        assert v.verdict in ("right", "abstain")
        if v.verdict == "right":
            used[v.reason.rsplit(" ", 1)[-1]] += 1
        else:
            codes[v.reason.split(":")[0]] += 1
    assert set(codes) <= {"balance", "no_counterfactual"}
    # The swap that harmed training went one way only (No -> A); both ways are used now.
    assert used["presence:no>a"] > 20 and used["presence:a>no"] > 20
    checked = 0
    for key, n in used.items():
        back = used.get(balance.mirror(key), 0)
        if n + back >= 60:
            checked += 1
            assert 0.6 < n / max(back, 1) < 1.67, (key, n, back)
    assert checked >= 8
    # Without keep rates the same answers are lopsided (the data has more clear sides than lesions, more
    # "yes" than "no"): the balance is the keep rates' doing.
    raw = Counter(ReferenceCritic().review(r, r.target).reason.rsplit(" ", 1)[-1] for r in records)
    assert raw["presence:no>a"] > 1.5 * raw["presence:a>no"]


def test_an_llm_critic_gets_no_keep_rates(records):
    assert reference_keep_rates(CriticConfig(backend="openai", model="m"), records[:10]) is None
