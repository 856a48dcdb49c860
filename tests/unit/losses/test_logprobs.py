"""Per-token log-probs: label shift, prompt/padding masking, fp32 math from bf16, chunking, bad input."""
import pytest
import torch

from medpo_ray.losses import LossInputError, token_logprobs

pytestmark = pytest.mark.unit


def _reference(logits, input_ids, completion_mask):
    """Independent fp64 reference: explicit loop over rows and label positions."""
    out = torch.zeros(input_ids.shape, dtype=torch.float64)
    lsm = torch.log_softmax(logits.double(), dim=-1)
    for n in range(input_ids.shape[0]):
        for t in range(1, input_ids.shape[1]):
            if completion_mask[n, t]:
                out[n, t] = lsm[n, t - 1, input_ids[n, t]]
    return out


def _inputs(N=3, T=7, V=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, T, V, generator=g, dtype=torch.float64) * 3
    ids = torch.randint(0, V, (N, T), generator=g)
    cmask = torch.zeros(N, T, dtype=torch.long)
    cmask[0, 3:] = 1
    cmask[1, 2:5] = 1  # right padding after position 4
    cmask[2, 6] = 1
    return logits, ids, cmask


def test_label_alignment_puts_logits_at_t_minus_1_on_token_t():
    # Invariant 7: logits at position s put all mass on token s + 1 -> l = 0 wherever scored.
    N, T, V = 2, 6, 8
    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 0, 2, 3, 5, 1]])
    logits = torch.zeros(N, T, V)
    for n in range(N):
        for s in range(T - 1):
            logits[n, s, ids[n, s + 1]] = 1e4
    cmask = torch.ones(N, T, dtype=torch.long)
    cmask[:, 0] = 0
    lp = token_logprobs(logits, ids, cmask)
    assert torch.equal(lp, torch.zeros(N, T))
    # Scoring the same tokens with the unshifted logits is maximally wrong.
    lp_wrong = token_logprobs(torch.roll(logits, 1, dims=1), ids, cmask)
    assert (lp_wrong[:, 2:] < -1e3).all()


@pytest.mark.parametrize("chunk_rows", [0, 1, 3])
def test_values_and_gradients_match_fp64_reference(chunk_rows):
    logits, ids, cmask = _inputs()
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, ids, cmask, chunk_rows=chunk_rows)
    ref = _reference(logits, ids, cmask)
    torch.testing.assert_close(lp.double(), ref, rtol=0, atol=1e-6)
    g = torch.randn(lp.shape, dtype=torch.float64)
    (lp.double() * g).sum().backward()
    x_ref = logits.clone().requires_grad_(True)
    (_reference(x_ref, ids, cmask) * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=1e-6)


def test_prompt_and_padding_positions_are_zero_and_get_no_gradient():
    logits, ids, cmask = _inputs()
    x = logits.clone().requires_grad_(True)
    lp = token_logprobs(x, ids, cmask)
    assert (lp[cmask == 0] == 0).all()
    lp.sum().backward()
    scored = torch.zeros_like(cmask, dtype=torch.bool)
    scored[:, :-1] = cmask[:, 1:].bool()  # logit row t-1 predicts label t
    assert (x.grad[~scored] == 0).all()
    assert (x.grad[scored].abs().sum(-1) > 0).all()


def test_bf16_logits_are_upcast_and_extreme_values_stay_finite():
    logits, ids, cmask = _inputs(V=64)
    logits[0, 2, :] = 1e4
    logits[0, 2, 5] = -1e4
    logits[1, 1, 3] = -1e4
    bf = logits.to(torch.bfloat16)
    x = bf.clone().requires_grad_(True)
    lp = token_logprobs(x, ids, cmask)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
    ref = _reference(bf.double(), ids, cmask)
    torch.testing.assert_close(lp.double(), ref, rtol=1e-2, atol=1e-3)
    lp.sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


def test_nan_logits_raise_naming_row_and_position():
    logits, ids, cmask = _inputs()
    logits[1, 2, 4] = float("nan")  # predicts label position 3 of row 1
    with pytest.raises(LossInputError, match=r"row 1, position 3"):
        token_logprobs(logits, ids, cmask, name="policy_logits")


@pytest.mark.parametrize("case, match", [
    ("logits_T", "policy_logits: shape"),
    ("mask_T", "completion_mask: shape"),
    ("first", "position 0"),
])
def test_bad_shapes_and_masks_raise(case, match):
    logits, ids, cmask = _inputs()
    if case == "logits_T":
        logits = logits[:, :-1]
    elif case == "mask_T":
        cmask = torch.cat([cmask, torch.ones(3, 2, dtype=torch.long)], dim=1)
    else:
        cmask[2, 0] = 1
    with pytest.raises(LossInputError, match=match):
        token_logprobs(logits, ids, cmask, name="policy_logits")
