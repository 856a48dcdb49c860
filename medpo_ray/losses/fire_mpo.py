"""The FiRe-MPO objective of shared/design/LOSS.md as pure functions over tensors and a LossConfig.

    R(c, y, w) = β · Σ_t w_t (l_θ − l_ref) / Z                         (Z = 1 "sum", Σ_t w_t "mean")
    L_pref = (1−ε)·sp(Δ_pref) + ε·sp(−Δ_pref),   Δ_pref = R(x, y+, w+) − R(x, y-, w-)
    L_vis  = sp(Δ_vis)   reverse: R(x~,y-,m-) − R(x~,y+,m+);  conditional: R(x,y+,m+) − R(x~,y+,m+) − μ;
                         v2: R(x,y+,m+) − R(x~,y-,m-)
    L_KL   = Σ_t k_t [λ·FKL_t + (1−λ)·RKL_t]           L_anc = sp(R(x, y+, w+) − δ)
    L      = mean_b [L_pref + γ·h·L_vis + α·L_KL + η·L_anc + ρ_nll·NLL(y+|x)]
with w_t = ω_e·m_t + ω_u·(1 − m_t) on completion tokens and sp(u) = softplus(−u) = −log σ(u).

The batch mean runs over the pairs that carry any weight: a pair whose y+ and y- both have zero
total weight (no edited token and ω_u = 0) says nothing and is skipped and counted, not averaged in
as a constant log 2. If every pair is skipped the loss is an exact zero that is still connected to
the graph, so data-parallel ranks keep stepping together instead of one rank raising alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from medpo_ray.config import LossConfig
from medpo_ray.losses.batch import PAIRS, X_NEG, X_POS, XC_NEG, XC_POS, PreferenceBatch
from medpo_ray.losses.checks import LossInputError, check_shape, check_submask
from medpo_ray.losses.kl import token_kl
from medpo_ray.losses.logprobs import token_logprobs

_VIS_PAIRS = {"reverse": (XC_NEG, XC_POS), "conditional": (XC_POS,), "v2": (XC_NEG,)}


def sp(u: torch.Tensor) -> torch.Tensor:
    """sp(u) = −log σ(u) = softplus(−u), stable for any u."""
    return F.softplus(-u)


def token_weights(edit_mask: torch.Tensor, completion_mask: torch.Tensor, omega_e: float,
                  omega_u: float) -> torch.Tensor:
    """w_t = ω_e·m_t + ω_u·(1 − m_t) on completion tokens (EOS included), 0 on prompt and padding."""
    m, c = edit_mask.float(), completion_mask.float()
    return omega_e * m + omega_u * (c - m)


def sequence_reward(rho: torch.Tensor, w: torch.Tensor, beta: float, z: str) -> torch.Tensor:
    """R = β · Σ_t w_t ρ_t / Z per row; a row with no weight gets R = 0 under either Z."""
    total = (w * rho).sum(-1)
    if z == "mean":
        norm = w.sum(-1)
        total = total / torch.where(norm > 0, norm, torch.ones_like(norm))
    return beta * total


def kl_scope_mask(batch: PreferenceBatch, scope: str) -> torch.Tensor:
    """k [R, T]: edited y+ tokens ("edited"), every y+ token ("all"), or edited y+ and y- ("edited_both")."""
    on_pos = (batch.row_pair == X_POS)[:, None]
    if scope == "all":
        return batch.completion_mask * on_pos
    rows = on_pos | (batch.row_pair == X_NEG)[:, None] if scope == "edited_both" else on_pos
    return batch.edit_mask * rows


def kl_per_example(policy_logits: torch.Tensor, ref_logits: torch.Tensor, batch: PreferenceBatch,
                   cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_KL, Σ_t k·FKL, Σ_t k·RKL), each [B]: the bidirectional KL summed over the k positions."""
    k = kl_scope_mask(batch, cfg.kl_scope)
    fkl, rkl = token_kl(policy_logits, ref_logits, batch.input_ids, k, cfg.kl_chunk_rows)
    B = batch.num_examples

    def per_example(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(B, dtype=x.dtype, device=x.device).index_add(0, batch.row_example, x.sum(-1))

    fkl_b, rkl_b = per_example(fkl), per_example(rkl)
    return cfg.lam * fkl_b + (1 - cfg.lam) * rkl_b, fkl_b, rkl_b


def fire_mpo_loss(policy_logits: torch.Tensor, ref_logits: torch.Tensor, batch: PreferenceBatch,
                  cfg: LossConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and diagnostics from policy and reference logits [R, T, V] over the batch rows."""
    lp = token_logprobs(policy_logits, batch.input_ids, batch.completion_mask, cfg.logprob_chunk_rows,
                        name="policy_logits")
    with torch.no_grad():
        lp_ref = token_logprobs(ref_logits, batch.input_ids, batch.completion_mask, cfg.logprob_chunk_rows,
                                name="ref_logits")
    kl = kl_per_example(policy_logits, ref_logits, batch, cfg) if cfg.alpha > 0 else None
    return fire_mpo_loss_from_logps(lp, lp_ref, batch, cfg, kl)


def _check_routing(batch: PreferenceBatch, cfg: LossConfig) -> bool:
    """Validate pair_rows; True when the x~ rows of the visual term exist for every example with h = 1."""
    check_submask("edit_mask", batch.edit_mask, batch.completion_mask)
    check_shape("pair_rows", batch.pair_rows, (4, batch.num_examples))
    for p in (X_POS, X_NEG):
        missing = (batch.pair_rows[p] < 0).nonzero()
        if len(missing):
            raise LossInputError(f"pair_rows: example {batch.record_ids[int(missing[0])]!r} has no {PAIRS[p]} row")
    for p in _VIS_PAIRS[cfg.vis_mode]:
        missing = (batch.has_corrupt & (batch.pair_rows[p] < 0)).nonzero()
        if len(missing):
            if cfg.gamma > 0:
                raise LossInputError(
                    f"pair_rows: example {batch.record_ids[int(missing[0])]!r} has x~ but no {PAIRS[p]} row, "
                    f"which vis_mode={cfg.vis_mode!r} needs; build the batch with pairs=needed_pairs(cfg)")
            return False
    return bool(batch.has_corrupt.any())


def fire_mpo_loss_from_logps(lp: torch.Tensor, lp_ref: torch.Tensor, batch: PreferenceBatch, cfg: LossConfig,
                             kl: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and diagnostics from per-token log-probs [R, T] (label positions) and kl_per_example()."""
    check_shape("policy log-probs", lp, tuple(batch.input_ids.shape))
    check_shape("reference log-probs", lp_ref, tuple(batch.input_ids.shape))
    if cfg.alpha > 0 and kl is None:
        raise LossInputError("alpha > 0 needs the token-wise KL: pass kl=kl_per_example(...) or use fire_mpo_loss")
    with_vis = _check_routing(batch, cfg)

    rho = lp - lp_ref.detach()
    w = token_weights(batch.edit_mask, batch.completion_mask, cfg.omega_e, cfg.omega_u)
    m = batch.edit_mask.float()
    r_w = sequence_reward(rho, w, cfg.beta, cfg.z)
    r_m = sequence_reward(rho, m, cfg.beta, cfg.z)
    pos, neg = batch.pair_rows[X_POS], batch.pair_rows[X_NEG]

    delta_pref = r_w[pos] - r_w[neg]
    l_pref = (1 - cfg.eps) * sp(delta_pref) + cfg.eps * sp(-delta_pref)
    l_anc = sp(r_w[pos] - cfg.delta)
    c_pos = batch.completion_mask[pos].float()
    nll = -(lp[pos] * c_pos).sum(-1) / c_pos.sum(-1).clamp(min=1)
    l_kl = kl[0] if kl is not None else torch.zeros_like(l_pref)
    total = l_pref + cfg.alpha * l_kl + cfg.eta * l_anc + cfg.rho_nll * nll

    h = batch.has_corrupt
    if with_vis:
        def r_at(p: int) -> torch.Tensor:
            return r_m[batch.pair_rows[p].clamp(min=0)]
        delta_vis = {"reverse": lambda: r_at(XC_NEG) - r_at(XC_POS),
                     "conditional": lambda: r_at(X_POS) - r_at(XC_POS) - cfg.mu,
                     "v2": lambda: r_at(X_POS) - r_at(XC_NEG)}[cfg.vis_mode]()
        # where(), not h * L_vis: rows without x~ read a placeholder row, whose value must not leak.
        l_vis = torch.where(h, sp(delta_vis), torch.zeros_like(delta_vis))
        total = total + cfg.gamma * l_vis

    keep = ((w[pos].sum(-1) > 0) | (w[neg].sum(-1) > 0)).float()
    n_keep = int(keep.sum())
    loss = (total * keep).sum() / max(n_keep, 1)

    diag = {"loss": float(loss.detach()), "pairs": float(len(keep)), "skipped_pairs": float(len(keep) - n_keep)}
    if n_keep:
        def mean(x: torch.Tensor, sel: torch.Tensor = keep) -> float:
            return float((x.detach() * sel).sum() / sel.sum())
        diag |= {"loss_pref": mean(l_pref), "loss_anchor": mean(l_anc), "loss_nll": mean(nll),
                 "delta_pref": mean(delta_pref), "reward_acc_pref": mean((delta_pref > 0).float()),
                 "reward_pos_clean": mean(r_w[pos]), "reward_neg_clean": mean(r_w[neg])}
        if kl is not None:
            diag |= {"loss_kl": mean(kl[0]), "fkl": mean(kl[1]), "rkl": mean(kl[2])}
        vis_sel = keep * h.float()
        if with_vis and vis_sel.sum() > 0:
            diag |= {"loss_vis": mean(l_vis, vis_sel), "delta_vis": mean(delta_vis, vis_sel),
                     "reward_acc_vis": mean((delta_vis > 0).float(), vis_sel)}
            if batch.pair_rows[XC_POS].ge(0).any():
                diag["reward_pos_corrupt"] = mean(r_at(XC_POS), vis_sel * batch.pair_rows[XC_POS].ge(0).float())
    return loss, diag
