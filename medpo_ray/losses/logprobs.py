"""Per-token log-probs l(y_t) from logits: label shift, prompt/padding masking and fp32 math, in one place.

Convention used by the whole loss package: every per-token tensor is indexed by the LABEL position t
(the position of the token being predicted), so masks built on token positions line up without any
shifting by the caller. The shift lives here only: the logits at position t-1 predict the token at t.

Only completion positions are scored: their logit rows are gathered first, so the fp32 work is
(completion tokens x V), never (N x T x V), and a chunked custom backward keeps at most
`chunk_rows x V` fp32 values alive at a time (bf16 logits stay bf16 in memory).
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
    """log softmax(z)[y] per row, fp32, computed and differentiated chunk by chunk."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, labels: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        dt = math_dtype(rows.dtype)
        out = torch.empty(rows.shape[0], dtype=dt, device=rows.device)
        for s, e in row_chunks(rows.shape[0], chunk_rows):
            z = rows[s:e].to(dt)
            out[s:e] = z.gather(-1, labels[s:e, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)
        ctx.save_for_backward(rows, labels)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        rows, labels = ctx.saved_tensors
        grad = torch.empty_like(rows)
        dt = math_dtype(rows.dtype)
        for s, e in row_chunks(rows.shape[0], ctx.chunk_rows):
            g = grad_out[s:e, None].to(dt)
            # d/dz [z_y - logsumexp(z)] = onehot(y) - softmax(z)
            gz = torch.softmax(rows[s:e].to(dt), dim=-1).mul_(-g)
            gz.scatter_add_(-1, labels[s:e, None], g)
            grad[s:e] = gz
        return grad, None, None


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor,
                   chunk_rows: int = 0, name: str = "logits") -> torch.Tensor:
    """[N, T] (fp32, fp64 for fp64 logits): log p(input_ids[n, t] | input_ids[n, <t]) on completion tokens, else 0."""
    check_logits(name, logits, input_ids)
    check_shape("completion_mask", completion_mask, tuple(input_ids.shape))
    check_completion_mask(completion_mask)
    n, t = completion_mask.nonzero(as_tuple=True)
    lp = _TokenLogProb.apply(logits[n, t - 1], input_ids[n, t], chunk_rows)
    check_finite(name, lp, n, t)
    return torch.zeros(input_ids.shape, dtype=lp.dtype, device=lp.device).index_put((n, t), lp)
