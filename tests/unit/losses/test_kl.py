"""Token-wise bidirectional KL: values and gradients against an fp64 full-vocabulary reference (LOSS.md (e) 1-2, 8)."""
import pytest
import torch

from medpo_ray.config import LossConfig
from medpo_ray.losses import LossInputError, build_preference_batch, kl_per_example, token_kl
from medpo_ray.losses.batch import X_NEG, X_POS

pytestmark = pytest.mark.unit


def _naive(policy, ref):
    """Independent fp64 reference over the whole [N, T, V]: (FKL, RKL) per position."""
    lt, lr = torch.log_softmax(policy.double(), -1), torch.log_softmax(ref.double(), -1)
    return (lr.exp() * (lr - lt)).sum(-1), (lt.exp() * (lt - lr)).sum(-1)


def _inputs(N=2, T=6, V=13, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    pol = torch.randn(N, T, V, generator=g, dtype=torch.float64) * scale
    ref = torch.randn(N, T, V, generator=g, dtype=torch.float64) * scale
    ids = torch.randint(0, V, (N, T), generator=g)
    k = torch.zeros(N, T, dtype=torch.long)
    k[0, [2, 3, 5]] = 1
    k[1, 4] = 1
    return pol, ref, ids, k


def _at_labels(x, k):
    """Per-position values of the naive reference moved to label positions (logit t-1 -> label t), masked."""
    out = torch.zeros(k.shape, dtype=x.dtype)
    out[:, 1:] = x[:, :-1]
    return out * k


@pytest.mark.parametrize("chunk_rows", [0, 1, 2])
def test_values_and_gradients_match_naive_fp64(chunk_rows):
    pol, ref, ids, k = _inputs()
    x = pol.clone().requires_grad_(True)
    fkl, rkl = token_kl(x, ref, ids, k, chunk_rows)
    nf, nr = _naive(pol, ref)
    torch.testing.assert_close(fkl.double(), _at_labels(nf, k), rtol=0, atol=1e-6)
    torch.testing.assert_close(rkl.double(), _at_labels(nr, k), rtol=0, atol=1e-6)
    gf, gr = torch.randn(2, *k.shape, dtype=torch.float64)
    ((fkl.double() * gf).sum() + (rkl.double() * gr).sum()).backward()
    x_ref = pol.clone().requires_grad_(True)
    nf, nr = _naive(x_ref, ref)
    ((_at_labels(nf, k) * gf).sum() + (_at_labels(nr, k) * gr).sum()).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-6)


def test_gradient_matches_finite_differences_and_rows_sum_to_zero():
    pol, ref, ids, k = _inputs(V=7)
    k[:] = 0
    k[0, 2] = k[1, 1] = k[1, 3] = 1
    lam = 0.3

    def l_kl(x):
        f, r = token_kl(x, ref, ids, k)
        return (lam * f + (1 - lam) * r).double().sum()

    x = pol.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(l_kl, (x,), eps=1e-6, atol=1e-6, fast_mode=True)
    l_kl(x).backward()
    # Softmax is shift invariant, so every vocabulary row of the gradient sums to 0.
    torch.testing.assert_close(x.grad.sum(-1), torch.zeros(k.shape, dtype=torch.float64), rtol=0, atol=1e-6)
    assert (x.grad[0, [0, 2, 3]] == 0).all()  # rows whose next label has k = 0


def test_identical_policy_and_reference_give_zero_kl_and_zero_gradient():
    pol, _, ids, k = _inputs()
    x = pol.clone().requires_grad_(True)
    fkl, rkl = token_kl(x, pol.clone(), ids, k)
    assert (fkl == 0).all() and (rkl == 0).all()
    (0.5 * fkl + 0.5 * rkl).sum().backward()
    assert (x.grad == 0).all()


@pytest.mark.parametrize("seed", range(5))
def test_kl_is_nonnegative_and_swapping_policy_and_reference_swaps_directions(seed):
    pol, ref, ids, k = _inputs(seed=seed, scale=4.0)
    fkl, rkl = token_kl(pol, ref, ids, k)
    assert (fkl >= 0).all() and (rkl >= 0).all() and (fkl[k.bool()] > 0).all()
    fkl_s, rkl_s = token_kl(ref, pol, ids, k)
    torch.testing.assert_close(fkl_s, rkl, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(rkl_s, fkl, rtol=1e-6, atol=1e-6)


def test_bf16_extreme_and_minus_inf_logits_stay_finite_and_close_to_fp64():
    pol, ref, ids, k = _inputs(V=64, scale=3.0)
    pol[0, 1, :5] = 1e4
    pol[0, 2, 7] = -1e4
    ref[0, 2, :] = -1e4
    ref[0, 2, 3] = 1e4
    bp, br = pol.to(torch.bfloat16), ref.to(torch.bfloat16)
    x = bp.clone().requires_grad_(True)
    fkl, rkl = token_kl(x, br, ids, k)
    nf, nr = _naive(bp, br)
    torch.testing.assert_close(fkl.double(), _at_labels(nf, k), rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(rkl.double(), _at_labels(nr, k), rtol=1e-2, atol=1e-3)
    (fkl + rkl).sum().backward()
    assert torch.isfinite(x.grad.float()).all()
    # A token with -inf logit under both models has p = 0: no 0 * log 0 NaN in value or gradient.
    pol[:, :, 0] = ref[:, :, 0] = float("-inf")
    x = pol.float().requires_grad_(True)
    fkl, rkl = token_kl(x, ref.float(), ids, k)
    (fkl + rkl).sum().backward()
    assert torch.isfinite(fkl).all() and torch.isfinite(rkl).all() and torch.isfinite(x.grad).all()


def test_nan_logits_raise_and_position_zero_is_rejected():
    pol, ref, ids, k = _inputs()
    ref[1, 3, 2] = float("nan")
    with pytest.raises(LossInputError, match=r"row 1, position 4"):
        token_kl(pol, ref, ids, k)
    k[0, 0] = 1
    with pytest.raises(LossInputError, match="position 0"):
        token_kl(pol, pol, ids, k)


def test_lambda_and_scope_select_direction_and_positions(tok, examples):
    batch = build_preference_batch(examples, tok)
    R, T = batch.input_ids.shape
    g = torch.Generator().manual_seed(0)
    pol, ref = torch.randn(2, R, T, 32, generator=g)
    ids = batch.input_ids % 32
    batch.input_ids = ids
    for lam, pick in ((1.0, 1), (0.0, 2)):
        out = kl_per_example(pol, ref, batch, LossConfig(lam=lam))
        torch.testing.assert_close(out[0], out[pick])
    for scope, rows, mask in (("edited", [X_POS], batch.edit_mask), ("all", [X_POS], batch.completion_mask),
                              ("edited_both", [X_POS, X_NEG], batch.edit_mask)):
        x = pol.clone().requires_grad_(True)
        kl_per_example(x, ref, batch, LossConfig(kl_scope=scope))[0].sum().backward()
        expect = torch.zeros(R, T, dtype=torch.bool)
        expect[:, :-1] = mask[:, 1:].bool() & torch.isin(batch.row_pair, torch.tensor(rows))[:, None]
        assert torch.equal(x.grad.abs().sum(-1) > 0, expect), scope
