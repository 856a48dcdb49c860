"""Per-token log-probs l(y_t) from logits: label shift, prompt/padding masking and fp32 math, in one place.

Convention used by the whole loss package: every per-token tensor is indexed by the LABEL position t
(the position of the token being predicted), so masks built on token positions line up without any
shifting by the caller. The shift lives here only: the logits at position t-1 predict the token at t.

Only completion positions are scored: their logit rows are gathered before any full-vocabulary work,
so the fp32 work is (completion tokens x V), never (N x T x V), and forward and backward read the rows
`chunk_rows` at a time, so at most chunk_rows x V upcast values are alive at once (bf16 logits stay
bf16 in memory; the backward recomputes the softmax instead of storing it).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from medpo_ray.losses.checks import check_completion_mask, check_finite, check_logits, check_shape


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least fp32: bf16/fp16 logits are upcast, fp64 stays fp64 (exact gradient checks)."""
    return torch.promote_types(dtype, torch.float32)


def row_chunks(n: int, chunk_rows: int):
    """(start, end) slices of n rows, chunk_rows at a time (0: all rows at once)."""
    step = chunk_rows if chunk_rows > 0 else max(n, 1)
    return ((s, min(s + step, n)) for s in range(0, n, step))


class _TokenLogProb(torch.autograd.Function):
    """log softmax(logits[n, s])[y] for listed rows (n, s), upcast, computed and differentiated chunk by chunk.

    Rows are read from the full logits one chunk at a time, never copied out all at once; the backward
    writes each chunk's gradient straight into the (unavoidable) dense gradient of the logits.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, n: torch.Tensor, s: torch.Tensor, labels: torch.Tensor,
                chunk_rows: int) -> torch.Tensor:
        dt = math_dtype(logits.dtype)
        out = torch.empty(n.shape[0], dtype=dt, device=logits.device)
        for a, b in row_chunks(n.shape[0], chunk_rows):
            z = logits[n[a:b], s[a:b]].to(dt)
            out[a:b] = z.gather(-1, labels[a:b, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(logits, n, s, labels)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        logits, n, s, labels = ctx.saved_tensors
        grad = torch.zeros_like(logits)
        dt = math_dtype(logits.dtype)
        for a, b in row_chunks(n.shape[0], ctx.chunk_rows):
            g = grad_out[a:b, None].to(dt)
            # d/dz [z_y - logsumexp(z)] = onehot(y) - softmax(z)
            gz = torch.softmax(logits[n[a:b], s[a:b]].to(dt), dim=-1).mul_(-g)
            gz.scatter_add_(-1, labels[a:b, None], g)
            grad[n[a:b], s[a:b]] = gz.to(grad.dtype)
        return grad, None, None, None, None


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor,
                   chunk_rows: int = 0, name: str = "logits") -> torch.Tensor:
    """[N, T] (fp32, fp64 for fp64 logits): log p(input_ids[n, t] | input_ids[n, <t]) on completion tokens, else 0."""
    check_logits(name, logits, input_ids)
    check_shape("completion_mask", completion_mask, tuple(input_ids.shape))
    check_completion_mask(completion_mask)
    n, t = completion_mask.nonzero(as_tuple=True)
    lp = _TokenLogProb.apply(logits, n, t - 1, input_ids[n, t], chunk_rows)
    check_finite(name, lp, n, t)
    return torch.zeros(input_ids.shape, dtype=lp.dtype, device=lp.device).index_put((n, t), lp)
