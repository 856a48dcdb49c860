"""Claims folded into the 14 CheXpert observations: 1 positive, 0 negative, -1 uncertain, None unmentioned."""
from __future__ import annotations

from collections.abc import Iterable

from medpo_ray.labeler.claims import Claim
from medpo_ray.labeler.vocab import CHEXPERT, CHEXPERT_OF

_RANK = {"present": 3, "uncertain": 2, "absent": 1}
_VALUE = {"present": 1, "uncertain": -1, "absent": 0}


def chexpert_labels(claims: Iterable[Claim]) -> dict[str, int | None]:
    """CheXpert's aggregation: any positive mention wins, then any uncertain one, then negative."""
    best: dict[str, str] = {}
    for c in claims:
        obs = CHEXPERT_OF.get(c.finding, c.finding)
        if obs not in best or _RANK[c.status] > _RANK[best[obs]]:
            best[obs] = c.status
    labels: dict[str, int | None] = {obs: (_VALUE[best[obs]] if obs in best else None) for obs in CHEXPERT}
    # No Finding: nothing positive or uncertain anywhere (support devices do not count, as in CheXpert).
    pathologic = [v for k, v in labels.items() if k not in ("no_finding", "support_devices")]
    labels["no_finding"] = 1 if all(v in (None, 0) for v in pathologic) else None
    return labels
