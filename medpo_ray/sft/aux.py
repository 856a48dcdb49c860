"""The auxiliary lesion-cell loss of the SFT warm start (shared/design/DATA.md, "Learnability").

A linear head reads the vision tower's merged patch features (one row per 28 x 28 image cell, image
by image, row-major) and predicts whether each cell holds lesion pixels (BCE). Plain SFT of a small
model on a few thousand studies learns the report grammar but not the image; this dense signal makes
the vision tower see the lesions. The head lives outside the model and a forward hook feeds it, so
the saved checkpoint is still a plain Qwen2-VL. (Also predicting each cell's lesion fraction and
lesion diameter, for the measurements, was tried: no gain beyond run-to-run noise.)
"""
from __future__ import annotations

from medpo_ray.errors import MedpoError


class AuxLossError(MedpoError):
    """The model has no vision merger to attach the head to, or cells and targets disagree."""


def vision_merger(model):
    """The module whose output is one feature row per merged image cell (Qwen2-VL: model.model.visual.merger)."""
    merger = getattr(getattr(getattr(model, "model", None), "visual", None), "merger", None)
    if merger is None:
        raise AuxLossError(f"{type(model).__name__} has no model.visual.merger (a Qwen2-VL-style vision tower); "
                           "set sft.aux_lesion_loss=false for this model")
    return merger


class LesionCellHead:
    """Linear cell classifier fed by a forward hook on the vision merger; `remove()` detaches it."""

    def __init__(self, model, seed: int = 0):
        import torch

        merger = vision_merger(model)
        width = model.config.text_config.hidden_size
        gen = torch.Generator().manual_seed(seed)
        self.linear = torch.nn.Linear(width, 1)
        with torch.no_grad():
            bound = width ** -0.5
            self.linear.weight.uniform_(-bound, bound, generator=gen)
            self.linear.bias.zero_()
        self._features = None
        self._handle = merger.register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self._features = output

    def parameters(self):
        """The head's trainable parameters (optimized beside the model's)."""
        return list(self.linear.parameters())

    def loss(self, targets, valid):
        """Mean BCE of the last forward's cell logits against `targets` (one 0/1 per cell) over `valid` cells."""
        import torch

        feats, self._features = self._features, None
        if feats is None:
            raise AuxLossError("no vision features captured: the forward had no image")
        if feats.shape[0] != targets.shape[0]:
            raise AuxLossError(f"{feats.shape[0]} merged image cells but {targets.shape[0]} cell targets")
        logits = self.linear(feats.float()).squeeze(-1)[valid]
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[valid].to(logits.device))

    def remove(self) -> None:
        """Detach the hook, leaving the model exactly as it was built."""
        self._handle.remove()
        self._features = None
