"""Token-wise forward and reverse KL between the policy and the frozen reference (LOSS.md (b)).

FKL_t = KL(ref || θ) and RKL_t = KL(θ || ref) over the full vocabulary at the positions with k_t = 1.
Those rows are gathered BEFORE any full-vocabulary work, so memory is (rows with k = 1) x V, not
N x T x V; with `chunk_rows` > 0 the fp32 log_softmax runs over at most chunk_rows x V values at a
time, forward and backward (the backward recomputes instead of storing fp32 probabilities, and
writes each chunk straight into the dense gradient of the logits, the one N x T x V buffer autograd
needs in any case).
The analytic gradient wrt the policy logits z (LOSS.md):
    ∂FKL/∂z = p_θ - p_ref,    ∂RKL/∂z = p_θ ⊙ (log p_θ - log p_ref - RKL).
The reference is a constant: it never receives a gradient.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from medpo_ray.losses.checks import LossInputError, check_finite, check_logits, check_shape
from medpo_ray.losses.logprobs import math_dtype, row_chunks


def _log_probs(logits: torch.Tensor, n: torch.Tensor, s: torch.Tensor, dt: torch.dtype) -> torch.Tensor:
    return torch.log_softmax(logits[n, s].to(dt), dim=-1)


def _times_finite(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """p ⊙ x in place in p, with 0 where p = 0 (a -inf logit: no 0·inf NaN); NaN from NaN logits stays."""
    zero = p == 0
    return p.mul_(x).masked_fill_(zero, 0)


class _BidirectionalKL(torch.autograd.Function):
    """Per listed row (n, s): (FKL, RKL) between policy and reference logits, upcast, chunk by chunk.

    In-place arithmetic keeps three upcast chunk x V buffers alive at a time, forward and backward.
    """

    @staticmethod
    def forward(ctx, policy_logits: torch.Tensor, ref_logits: torch.Tensor, n: torch.Tensor, s: torch.Tensor,
                chunk_rows: int):
        dt = math_dtype(policy_logits.dtype)
        fkl = torch.empty(n.shape[0], dtype=dt, device=policy_logits.device)
        rkl = torch.empty_like(fkl)
        for a, b in row_chunks(n.shape[0], chunk_rows):
            diff = _log_probs(policy_logits, n[a:b], s[a:b], dt)
            lp_r = _log_probs(ref_logits, n[a:b], s[a:b], dt)
            p_t = diff.exp()
            diff.sub_(lp_r)  # log p_θ - log p_ref
            p_r = lp_r.exp_()
            rkl[a:b] = _times_finite(p_t, diff).sum(-1)
            fkl[a:b] = -_times_finite(p_r, diff).sum(-1)
        ctx.save_for_backward(policy_logits, ref_logits, n, s, rkl)
        ctx.chunk_rows = chunk_rows
        return fkl, rkl

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_fkl: torch.Tensor, grad_rkl: torch.Tensor):
        policy_logits, ref_logits, n, s, rkl = ctx.saved_tensors
        grad = torch.zeros_like(policy_logits)
        dt = math_dtype(policy_logits.dtype)
        for a, b in row_chunks(n.shape[0], ctx.chunk_rows):
            g = _log_probs(policy_logits, n[a:b], s[a:b], dt)
            lp_r = _log_probs(ref_logits, n[a:b], s[a:b], dt)
            p_t = g.exp()
            g.sub_(lp_r).sub_(rkl[a:b, None])  # log p_θ - log p_ref - RKL
            p_r = lp_r.exp_()
            # g = grad_RKL · p_θ ⊙ (log p_θ - log p_ref - RKL) + grad_FKL · (p_θ - p_ref)
            g = g.mul_(p_t).masked_fill_(p_t == 0, 0).mul_(grad_rkl[a:b, None].to(dt))
            g.add_(p_t.sub_(p_r).mul_(grad_fkl[a:b, None].to(dt)))
            grad[n[a:b], s[a:b]] = g.to(grad.dtype)
        return grad, None, None, None, None


def token_kl(policy_logits: torch.Tensor, ref_logits: torch.Tensor, input_ids: torch.Tensor,
             k: torch.Tensor, chunk_rows: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(FKL, RKL), each [N, T] (fp32, fp64 for fp64 logits) by label position, nonzero only where k = 1."""
    check_logits("policy_logits", policy_logits, input_ids)
    check_logits("ref_logits", ref_logits, input_ids)
    check_shape("kl mask k", k, tuple(input_ids.shape))
    if k[:, 0].any():
        raise LossInputError("kl mask k: marks position 0, which no logit predicts")
    n, t = k.nonzero(as_tuple=True)
    fkl, rkl = _BidirectionalKL.apply(policy_logits, ref_logits.detach(), n, t - 1, chunk_rows)
    check_finite("policy_logits/ref_logits (KL)", fkl + rkl, n, t)
    zeros = torch.zeros(input_ids.shape, dtype=fkl.dtype, device=fkl.device)
    return zeros.index_put((n, t), fkl), zeros.index_put((n, t), rkl)
