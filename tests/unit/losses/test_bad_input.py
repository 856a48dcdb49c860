"""Bad tensors reaching the loss: a clear error naming field and row, or a counted skip; never a NaN loss."""
import pytest
import torch

from medpo_ray.config import LossConfig
from medpo_ray.losses import (
    LossInputError,
    PairExample,
    build_preference_batch,
    fire_mpo_loss,
    fire_mpo_loss_from_logps,
    needed_pairs,
)
from tests.unit.losses.conftest import logits_for

pytestmark = pytest.mark.unit


@pytest.fixture()
def batch(tok, examples):
    return build_preference_batch(examples, tok)


def test_mismatched_logit_shapes(tok, batch):
    pol, ref = logits_for(batch, len(tok)), logits_for(batch, len(tok), 1)
    with pytest.raises(LossInputError, match="ref_logits: shape"):
        fire_mpo_loss(pol, ref[:, :-1], batch, LossConfig())
    with pytest.raises(LossInputError, match="policy_logits: shape"):
        fire_mpo_loss(pol[:-1], ref, batch, LossConfig())
    with pytest.raises(LossInputError, match="policy log-probs: shape"):
        fire_mpo_loss_from_logps(torch.zeros(2, 3), torch.zeros(2, 3), batch, LossConfig(alpha=0.0))


def test_mask_longer_than_its_sequence(tok, batch):
    n = int(batch.attention_mask[4].sum())
    batch.edit_mask = batch.edit_mask.clone()
    batch.edit_mask[4, n + 1] = 1  # a token of padding marked as edited
    with pytest.raises(LossInputError, match=rf"edit_mask: row 4 marks position {n + 1}, which is not a completion"):
        fire_mpo_loss(logits_for(batch, len(tok)), logits_for(batch, len(tok), 1), batch, LossConfig())


def test_nan_logits(tok, batch):
    pol = logits_for(batch, len(tok))
    r, t = 1, int(batch.completion_mask[1].nonzero()[2])
    pol[r, t - 1, 7] = float("nan")
    with pytest.raises(LossInputError, match=rf"policy_logits: non-finite value at row {r}, position {t}"):
        fire_mpo_loss(pol, logits_for(batch, len(tok), 1), batch, LossConfig())


def test_batch_without_the_rows_the_config_needs(tok, examples):
    dpo_batch = build_preference_batch(examples, tok, pairs=needed_pairs(LossConfig(preset="dpo")))
    pol, ref = logits_for(dpo_batch, len(tok)), logits_for(dpo_batch, len(tok), 1)
    with pytest.raises(LossInputError, match=r"example 'ex0' has x~ but no \(x~,y-\) row"):
        fire_mpo_loss(pol, ref, dpo_batch, LossConfig())
    loss, diag = fire_mpo_loss(pol, ref, dpo_batch, LossConfig(gamma=0.0))
    assert torch.isfinite(loss) and "loss_vis" not in diag
    with pytest.raises(LossInputError, match="alpha > 0 needs the token-wise KL"):
        fire_mpo_loss_from_logps(pol[..., 0], ref[..., 0], dpo_batch, LossConfig(gamma=0.0))


def test_pair_with_no_edited_token_on_either_side_is_skipped_and_counted(tok, examples):
    empty = PairExample("empty", examples[0].prompt_ids, "No mass.", "No mass seen.", [], [])
    cfg = LossConfig(rho_nll=0.1)
    with_empty = build_preference_batch([examples[0], empty, examples[1]], tok)
    without = build_preference_batch([examples[0], examples[1]], tok)
    (l_with, d_with), (l_without, d_without) = (
        fire_mpo_loss(logits_for(b, len(tok)), logits_for(b, len(tok), 1), b, cfg) for b in (with_empty, without))
    assert (d_with["skipped_pairs"], d_with["pairs"], d_without["skipped_pairs"]) == (1, 3, 0)
    assert l_with.item() == pytest.approx(l_without.item(), rel=1e-12)
    # Under uniform token weights (dpo) the same pair is an ordinary example.
    dpo = fire_mpo_loss(logits_for(with_empty, len(tok)), logits_for(with_empty, len(tok), 1), with_empty,
                        LossConfig(preset="dpo"))[1]
    assert dpo["skipped_pairs"] == 0 and dpo["pairs"] == 3


def test_batch_of_only_empty_pairs_gives_a_connected_zero(tok, examples):
    empty = PairExample("empty", examples[0].prompt_ids, "No mass.", "No mass seen.", [], [])
    b = build_preference_batch([empty], tok)
    x = logits_for(b, len(tok)).requires_grad_(True)
    loss, diag = fire_mpo_loss(x, logits_for(b, len(tok), 1), b, LossConfig())
    assert loss.item() == 0 and diag["skipped_pairs"] == 1 and "loss_pref" not in diag
    loss.backward()
    assert (x.grad == 0).all()
