"""A few optimizer steps of FiRe-MPO on one pair with a tiny real causal LM raise the edited tokens' margin."""
import copy

import pytest
import torch

from medpo_ray.config import LossConfig
from medpo_ray.losses import build_preference_batch, fire_mpo_loss, token_logprobs
from medpo_ray.losses.batch import X_NEG, X_POS
from tests.unit.losses.tiny import build_model

pytestmark = pytest.mark.unit


def _edited_margin(model, ref, batch):
    """Σ over edited tokens of (l_θ − l_ref) on y+ minus the same on y-, under the clean image."""
    with torch.no_grad():
        args = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        rho = (token_logprobs(model(**args).logits, batch.input_ids, batch.completion_mask)
               - token_logprobs(ref(**args).logits, batch.input_ids, batch.completion_mask)) * batch.edit_mask
    return float(rho[batch.pair_rows[X_POS, 0]].sum() - rho[batch.pair_rows[X_NEG, 0]].sum())


def test_few_steps_raise_the_edited_margin(tok, examples):
    torch.manual_seed(0)
    batch = build_preference_batch(examples[:1], tok)
    model = build_model(len(tok), seed=3)
    ref = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    cfg = LossConfig()
    margins, losses = [_edited_margin(model, ref, batch)], []
    for _ in range(4):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        with torch.no_grad():
            ref_logits = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss, diag = fire_mpo_loss(logits, ref_logits, batch, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        margins.append(_edited_margin(model, ref, batch))
    assert margins[0] == 0.0
    assert margins[-1] > 1.0 and all(b > a for a, b in zip(margins, margins[1:], strict=False))
    assert losses[-1] < losses[0]
    assert diag["reward_acc_pref"] == 1.0
