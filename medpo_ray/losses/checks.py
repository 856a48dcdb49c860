"""Input checks for the loss: shapes, masks and finiteness, each failure named by field, row and position.

A bad tensor must stop the step with a message a person can act on, never turn into a NaN loss that
silently poisons the weights.
"""
from __future__ import annotations

import torch

from medpo_ray.errors import MedpoError


class LossInputError(MedpoError, ValueError):
    """Tensors handed to the loss that do not fit together; the message names the field and row."""


def check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Raise unless `tensor` has exactly `shape`."""
    if tuple(tensor.shape) != tuple(shape):
        raise LossInputError(f"{name}: shape {tuple(tensor.shape)} does not match the expected {tuple(shape)}")


def check_logits(name: str, logits: torch.Tensor, input_ids: torch.Tensor) -> None:
    """Logits must be floating point [N, T, V] over the same [N, T] as the token ids."""
    if not logits.is_floating_point() or logits.dim() != 3:
        raise LossInputError(f"{name}: expected floating-point logits [N, T, V], got {logits.dtype} "
                             f"of shape {tuple(logits.shape)}")
    check_shape(name, logits, (*input_ids.shape, logits.shape[-1]))


def check_completion_mask(completion_mask: torch.Tensor) -> None:
    """No completion token at position 0: nothing precedes it, so no logit predicts it."""
    if completion_mask.dim() != 2:
        raise LossInputError(f"completion_mask: expected [N, T], got shape {tuple(completion_mask.shape)}")
    bad = completion_mask[:, 0].nonzero()
    if len(bad):
        raise LossInputError(f"completion_mask: row {int(bad[0, 0])} marks position 0 as a completion token; "
                             "every completion needs at least one prompt token before it")


def check_submask(name: str, mask: torch.Tensor, completion_mask: torch.Tensor) -> None:
    """A token mask may only mark completion tokens (a mask longer than its sequence is an error)."""
    check_shape(name, mask, tuple(completion_mask.shape))
    bad = ((mask != 0) & (completion_mask == 0)).nonzero()
    if len(bad):
        row, pos = (int(v) for v in bad[0])
        raise LossInputError(f"{name}: row {row} marks position {pos}, which is not a completion token "
                             f"(the mask is longer than its sequence or covers the prompt or padding)")


def check_finite(name: str, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """Raise naming the first (row, position) whose value is NaN or infinite."""
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise LossInputError(f"{name}: non-finite value at row {int(rows[i])}, position {int(cols[i])} "
                             "(NaN or infinite logits)")
