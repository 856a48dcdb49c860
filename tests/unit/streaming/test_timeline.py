"""Stage overlap: the share of a window in which two or more distinct stages computed."""
from __future__ import annotations

import pytest

from medpo_ray.streaming.timeline import overlap_share

pytestmark = pytest.mark.unit


def test_stages_taking_turns_do_not_overlap():
    turns = [("rollout", 0, 1), ("editor", 1, 2), ("corruption", 2, 3), ("learner", 3, 4)]
    assert overlap_share(turns, 0, 4) == 0.0


def test_overlap_counts_distinct_stages_only_and_clips_to_the_window():
    iv = [("rollout", 0, 2), ("rollout", 1, 3),  # two engines: one stage, no overlap by itself
          ("editor", 2.5, 4), ("learner", 3.5, 6)]
    # two or more stages at once: [2.5, 3] (rollout+editor) and [3.5, 4] (editor+learner) = 1.0 of 5
    assert overlap_share(iv, 0, 5) == pytest.approx(1.0 / 5)
    assert overlap_share(iv, 3, 4) == pytest.approx(0.5)
    assert overlap_share(iv, 5, 5) == 0.0
