"""Token-wise forward and reverse KL between the policy and the frozen reference (LOSS.md (b)).

FKL_t = KL(ref || θ) and RKL_t = KL(θ || ref) over the full vocabulary at the positions with k_t = 1.
Those rows are gathered BEFORE any full-vocabulary work, so memory is (rows with k = 1) x V, not
N x T x V; with `chunk_rows` > 0 the fp32 log_softmax runs over at most chunk_rows x V values at a
time, forward and backward (the backward recomputes instead of storing fp32 probabilities).
The analytic gradient wrt the policy logits z (LOSS.md):
    ∂FKL/∂z = p_θ - p_ref,    ∂RKL/∂z = p_θ ⊙ (log p_θ - log p_ref - RKL).
The reference is a constant: it never receives a gradient.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from medpo_ray.losses.checks import LossInputError, check_finite, check_logits, check_shape
from medpo_ray.losses.logprobs import math_dtype, row_chunks


def _plogp_ratio(lp_a: torch.Tensor, lp_b: torch.Tensor) -> torch.Tensor:
    """p_a ⊙ (log p_a - log p_b), with 0 where p_a = 0 (no 0·log 0 NaN for -inf logits)."""
    p_a = lp_a.exp()
    return torch.where(p_a > 0, p_a * (lp_a - lp_b), torch.zeros_like(p_a))


class _BidirectionalKL(torch.autograd.Function):
    """Per row (FKL, RKL) in fp32 from policy and reference logit rows, chunked."""

    @staticmethod
    def forward(ctx, policy_rows: torch.Tensor, ref_rows: torch.Tensor, chunk_rows: int):
        dt = math_dtype(policy_rows.dtype)
        fkl = torch.empty(policy_rows.shape[0], dtype=dt, device=policy_rows.device)
        rkl = torch.empty_like(fkl)
        for s, e in row_chunks(policy_rows.shape[0], chunk_rows):
            lp_t = torch.log_softmax(policy_rows[s:e].to(dt), dim=-1)
            lp_r = torch.log_softmax(ref_rows[s:e].to(dt), dim=-1)
            fkl[s:e] = _plogp_ratio(lp_r, lp_t).sum(-1)
            rkl[s:e] = _plogp_ratio(lp_t, lp_r).sum(-1)
        ctx.save_for_backward(policy_rows, ref_rows, rkl)
        ctx.chunk_rows = chunk_rows
        return fkl, rkl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_fkl: torch.Tensor, grad_rkl: torch.Tensor):
        policy_rows, ref_rows, rkl = ctx.saved_tensors
        grad = torch.empty_like(policy_rows)
        dt = math_dtype(policy_rows.dtype)
        for s, e in row_chunks(policy_rows.shape[0], ctx.chunk_rows):
            lp_t = torch.log_softmax(policy_rows[s:e].to(dt), dim=-1)
            lp_r = torch.log_softmax(ref_rows[s:e].to(dt), dim=-1)
            p_t = lp_t.exp()
            g_rev = torch.where(p_t > 0, p_t * (lp_t - lp_r - rkl[s:e, None]), torch.zeros_like(p_t))
            grad[s:e] = grad_fkl[s:e, None] * (p_t - lp_r.exp()) + grad_rkl[s:e, None] * g_rev
        return grad, None, None


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, input_ids: torch.Tensor,
             k: torch.Tensor, chunk_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(FKL, RKL), each [N, T] (fp32, fp64 for fp64 logits) by label position, nonzero only where k = 1."""
    check_logits("policy_logits", policy_logits, input_ids)
    check_logits("ref_logits", ref_logits, input_ids)
    check_shape("kl mask k", k, tuple(input_ids.shape))
    if k[:, 0].any():
        raise LossInputError("kl mask k: marks position 0, which no logit predicts")
    n, t = k.nonzero(as_tuple=True)
    fkl, rkl = _BidirectionalKL.apply(policy_logits[n, t - 1], ref_logits[n, t - 1].detach(), chunk_rows)
    check_finite("policy_logits/ref_logits (KL)", fkl + rkl, n, t)
    zeros = torch.zeros(input_ids.shape, dtype=fkl.dtype, device=fkl.device)
    return zeros.index_put((n, t), fkl), zeros.index_put((n, t), rkl)
