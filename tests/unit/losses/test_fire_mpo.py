"""The FiRe-MPO total against an independent loop-based reference, and the invariants of LOSS.md (e) 1, 4-6, 9."""
import math

import pytest
import torch

from medpo_ray.config import LossConfig
from medpo_ray.losses import build_preference_batch, fire_mpo_loss
from medpo_ray.losses.batch import X_NEG, X_POS, XC_NEG, XC_POS
from tests.unit.losses.conftest import logits_for

pytestmark = pytest.mark.unit


def _sp(u):
    return math.log1p(math.exp(-u)) if u > -30 else -u


def _reference_loss(pol, ref, batch, cfg):
    """LOSS.md (a)-(d) written out token by token in fp64 Python, independent of the library."""
    lt, lr = torch.log_softmax(pol.double(), -1), torch.log_softmax(ref.double(), -1)
    ids, c, m = batch.input_ids, batch.completion_mask, batch.edit_mask

    def R(row, weights_are_mask):
        num = den = 0.0
        for t in range(1, ids.shape[1]):
            if not c[row, t]:
                continue
            mt = float(m[row, t])
            wt = mt if weights_are_mask else cfg.omega_e * mt + cfg.omega_u * (1 - mt)
            num += wt * float(lt[row, t - 1, ids[row, t]] - lr[row, t - 1, ids[row, t]])
            den += wt
        return cfg.beta * num / (1.0 if cfg.z == "sum" or den == 0 else den)

    def kl(row, k):
        out = 0.0
        for t in range(1, ids.shape[1]):
            if k[row, t]:
                pt, pr = lt[row, t - 1].exp(), lr[row, t - 1].exp()
                fkl = float((pr * (lr[row, t - 1] - lt[row, t - 1])).sum())
                rkl = float((pt * (lt[row, t - 1] - lr[row, t - 1])).sum())
                out += cfg.lam * fkl + (1 - cfg.lam) * rkl
        return out

    totals = []
    for b in range(batch.num_examples):
        rows = {p: int(batch.pair_rows[p, b]) for p in range(4)}
        pos, neg = rows[X_POS], rows[X_NEG]
        d = R(pos, False) - R(neg, False)
        total = (1 - cfg.eps) * _sp(d) + cfg.eps * _sp(-d)
        if cfg.gamma > 0 and batch.has_corrupt[b]:
            if cfg.vis_mode == "reverse":
                dv = R(rows[XC_NEG], True) - R(rows[XC_POS], True)
            elif cfg.vis_mode == "conditional":
                dv = R(pos, True) - R(rows[XC_POS], True) - cfg.mu
            else:
                dv = R(pos, True) - R(rows[XC_NEG], True)
            total += cfg.gamma * _sp(dv)
        k = {"edited": m, "all": c, "edited_both": m}[cfg.kl_scope]
        total += cfg.alpha * (kl(pos, k) + (kl(neg, k) if cfg.kl_scope == "edited_both" else 0.0))
        total += cfg.eta * _sp(R(pos, False) - cfg.delta)
        n_tok = int(c[pos].sum())
        total += cfg.rho_nll * -sum(float(lt[pos, t - 1, ids[pos, t]]) for t in range(1, ids.shape[1])
                                    if c[pos, t]) / n_tok
        totals.append(total)
    return sum(totals) / len(totals)


@pytest.fixture(scope="module")
def batch(tok, examples):
    return build_preference_batch(examples, tok)


@pytest.mark.parametrize("cfg", [
    LossConfig(),
    LossConfig(preset="rrpo"),
    LossConfig(preset="dpo"),
    LossConfig(preset="ddpo"),
    LossConfig(preset="mdpo", mu=0.05),
    LossConfig(preset="mask_dpo", eps=0.2),
    LossConfig(vis_mode="v2", kl_scope="edited_both", omega_u=0.3, z="mean", eta=0.5, delta=0.1, rho_nll=0.2,
               gamma=0.7, alpha=0.2, lam=0.25, kl_chunk_rows=2, logprob_chunk_rows=3),
], ids=lambda c: c.preset if c.preset != "fire_mpo" or c.vis_mode == "reverse" else "all_knobs")
def test_total_matches_loop_reference(tok, batch, cfg):
    pol, ref = logits_for(batch, len(tok), 0), logits_for(batch, len(tok), 1)
    loss, diag = fire_mpo_loss(pol, ref, batch, cfg)
    assert loss.item() == pytest.approx(_reference_loss(pol, ref, batch, cfg), rel=1e-9, abs=1e-9)
    assert diag["loss"] == pytest.approx(loss.item()) and diag["skipped_pairs"] == 0


def test_identical_policy_and_reference(tok, batch):
    # Invariant 1: θ == ref -> KL = 0 with zero gradient, L_pref = L_vis = log 2.
    pol = logits_for(batch, len(tok))
    grads = []
    for alpha in (0.0, 0.5):
        x = pol.clone().requires_grad_(True)
        loss, diag = fire_mpo_loss(x, pol.clone(), batch, LossConfig(alpha=alpha))
        loss.backward()
        grads.append(x.grad)
        assert diag["loss_pref"] == pytest.approx(math.log(2)) and diag["loss_vis"] == pytest.approx(math.log(2))
    assert diag["loss_kl"] == 0 and diag["fkl"] == 0 and diag["rkl"] == 0
    assert torch.equal(grads[0], grads[1])


def test_unweighted_positions_get_exactly_zero_gradient(tok, batch):
    # Invariant 4: ω_u = 0, kl_scope = edited -> logit rows predicting a token with m = k = 0 get no gradient.
    x = logits_for(batch, len(tok)).requires_grad_(True)
    fire_mpo_loss(x, logits_for(batch, len(tok), 1), batch, LossConfig())[0].backward()
    predicts_edit = torch.zeros(batch.input_ids.shape, dtype=torch.bool)
    predicts_edit[:, :-1] = batch.edit_mask[:, 1:].bool()
    assert torch.equal(x.grad.abs().sum(-1) > 0, predicts_edit)


def test_h_zero_removes_visual_term_and_its_gradient(tok, examples):
    batch = build_preference_batch(examples, tok)
    pol, ref = logits_for(batch, len(tok)), logits_for(batch, len(tok), 1)
    cfg = LossConfig(alpha=0.0)
    x_on = pol.clone().requires_grad_(True)
    loss_on, diag_on = fire_mpo_loss(x_on, ref, batch, cfg)
    loss_on.backward()
    batch.has_corrupt = batch.has_corrupt.clone()
    batch.has_corrupt[0] = False
    x_off = pol.clone().requires_grad_(True)
    loss_off, _ = fire_mpo_loss(x_off, ref, batch, cfg)
    loss_off.backward()
    x_rows = batch.pair_rows[[XC_NEG, XC_POS], 0]
    assert (x_off.grad[x_rows] == 0).all() and (x_on.grad[x_rows] != 0).any()
    one = build_preference_batch(examples[:1], tok)
    l_vis = fire_mpo_loss(logits_for(one, len(tok)), logits_for(one, len(tok), 1), one, cfg)[1]["loss_vis"]
    assert loss_on.item() - loss_off.item() == pytest.approx(cfg.gamma * l_vis / batch.num_examples, rel=1e-9)


def test_padding_changes_nothing(tok, examples):
    batch = build_preference_batch(examples, tok)
    padded = build_preference_batch(examples, tok, pad_to_multiple_of=64)
    assert padded.input_ids.shape[1] > batch.input_ids.shape[1]
    out = []
    for b in (batch, padded):
        x = logits_for(b, len(tok)).requires_grad_(True)
        loss, diag = fire_mpo_loss(x, logits_for(b, len(tok), 1), b, LossConfig(rho_nll=0.1, eta=0.1))
        loss.backward()
        out.append((loss, diag, x.grad))
    assert out[0][0].item() == pytest.approx(out[1][0].item(), rel=1e-12)
    assert out[0][1] == pytest.approx(out[1][1], rel=1e-9)
    T = batch.input_ids.shape[1]
    assert torch.equal(out[0][2], out[1][2][:, :T]) and (out[1][2][:, T:] == 0).all()


@pytest.mark.parametrize("omega_u", [0.0, 0.5, 1.0])
def test_shared_prefix_contributes_nothing_to_delta_pref(tok, batch, omega_u):
    # Invariant 5: y+ and y- share "There is a" (and the prompt); identical logits there cancel exactly.
    pos, neg = batch.pair_rows[X_POS, 0], batch.pair_rows[X_NEG, 0]
    ids = batch.input_ids
    L = int((ids[pos] != ids[neg]).nonzero()[0])
    assert batch.completion_mask[pos, :L].sum() >= 3
    cfg = LossConfig(omega_u=omega_u, gamma=0.0, alpha=0.0)
    deltas = []
    for tag in (2, 3):
        pol, ref = logits_for(batch, len(tok)), logits_for(batch, len(tok), 1)
        shared = logits_for(batch, len(tok), tag)[pos, :L - 1]
        pol[pos, :L - 1] = pol[neg, :L - 1] = shared
        deltas.append(fire_mpo_loss(pol, ref, batch, cfg)[1]["delta_pref"])
    assert deltas[0] == pytest.approx(deltas[1], abs=1e-12)


def _raise_label_logit(logits, batch, pair, example, amount):
    """Raise l_θ of every edited token of (pair, example) by moving its label logit up."""
    out = logits.clone()
    r = batch.pair_rows[pair, example]
    for t in batch.edit_mask[r].nonzero().flatten():
        out[r, t - 1, batch.input_ids[r, t]] += amount
    return out


def test_signs_of_the_terms(tok, batch):
    # Invariant 6.
    pol, ref = logits_for(batch, len(tok)), logits_for(batch, len(tok), 1)
    cfg = LossConfig()
    base = fire_mpo_loss(pol, ref, batch, cfg)[1]
    up_pos = fire_mpo_loss(_raise_label_logit(pol, batch, X_POS, 0, 1.0), ref, batch, cfg)[1]
    assert up_pos["loss_pref"] < base["loss_pref"]
    up_corrupt = fire_mpo_loss(_raise_label_logit(pol, batch, XC_POS, 0, 1.0), ref, batch, cfg)[1]
    assert up_corrupt["loss_vis"] > base["loss_vis"]


def test_corrupt_image_equal_to_clean_gives_delta_vis_minus_delta_pref(tok, examples):
    same = [type(e)(**{**vars(e), "corrupt_prompt_ids": None, "has_corrupt": True}) for e in examples]
    batch = build_preference_batch(same, tok)
    pol, ref = logits_for(batch, len(tok)), logits_for(batch, len(tok), 1)
    for src, dst in ((X_POS, XC_POS), (X_NEG, XC_NEG)):  # x~ ≡ x: the same logits under both images
        pol[batch.pair_rows[dst]] = pol[batch.pair_rows[src]]
        ref[batch.pair_rows[dst]] = ref[batch.pair_rows[src]]
    _, diag = fire_mpo_loss(pol, ref, batch, LossConfig(omega_e=1.0, omega_u=0.0))
    assert diag["delta_vis"] == pytest.approx(-diag["delta_pref"], abs=1e-12)


def test_loss_is_batch_mean_and_order_invariant(tok, examples):
    # Invariant 9.
    cfg = LossConfig(rho_nll=0.1, eta=0.2)

    def loss_of(exs):
        b = build_preference_batch(exs, tok)
        return fire_mpo_loss(logits_for(b, len(tok)), logits_for(b, len(tok), 1), b, cfg)[0].item()

    whole = loss_of(examples)
    assert loss_of(examples[::-1]) == pytest.approx(whole, rel=1e-12)
    assert whole == pytest.approx(sum(loss_of([e]) for e in examples) / len(examples), rel=1e-12)


def test_bf16_logits_give_the_fp64_loss_within_one_percent(tok, batch):
    # Invariant 8 on the whole objective: bf16 logits (as a bf16 model emits them) are upcast for the math.
    pol, ref = logits_for(batch, len(tok)), logits_for(batch, len(tok), 1)
    cfg = LossConfig(alpha=0.5, rho_nll=0.1)
    exact, _ = fire_mpo_loss(pol, ref, batch, cfg)
    x = pol.to(torch.bfloat16).requires_grad_(True)
    low, diag = fire_mpo_loss(x, ref.to(torch.bfloat16), batch, cfg)
    assert low.dtype == torch.float32 and math.isfinite(low.item())
    assert low.item() == pytest.approx(exact.item(), rel=1e-2)
    low.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
