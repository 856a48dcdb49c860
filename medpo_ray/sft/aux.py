"""The auxiliary lesion-cell loss of the SFT warm start (shared/design/DATA.md, "Learnability").

A linear head reads the vision tower's merged patch features (one row per 28 x 28 image cell, image
by image, row-major) and predicts whether each cell holds lesion pixels (BCE). Plain SFT of a small
model on a few thousand studies learns the report grammar but not the image; this dense signal makes
the vision tower see the lesions. The head lives outside the model and a forward hook feeds it, so
the saved checkpoint is still a plain Qwen2-VL. (Also predicting each cell's lesion fraction and
lesion diameter, for the measurements, was tried with continuous radii: no gain beyond run-to-run noise.)

Size levels (sft.aux_size_levels, for data with discrete radii, data.radius_levels >= 2): the same head
gets one more logit per radius level and, on the cells that hold a lesion, a cross-entropy on the level
of that lesion, so the vision features carry the lesion's size class as well as its place.
"""
from __future__ import annotations

from medpo_ray.errors import MedpoError


class AuxLossError(MedpoError):
    """The model has no vision merger to attach the head to, or cells and targets disagree."""


def vision_merger(model):
    """The module whose output is one feature row per merged image cell, in raster order (the family's
    `aux_path`: Qwen2-VL and Qwen3-VL `model.visual.merger`)."""
    from medpo_ray.models.families import family_of

    family = family_of(getattr(model.config, "model_type", None))
    merger = model.get_submodule(family.aux_path) if family.aux_path else None
    if merger is None:
        raise AuxLossError(f"{type(model).__name__} ({family.name}) has no vision module that gives one row per "
                           "image cell in raster order; set sft.aux_lesion_loss=false for this model")
    return merger


class LesionCellHead:
    """Linear cell classifier fed by a forward hook on the vision merger; `remove()` detaches it.

    Output 0 is the lesion-cell logit; with `n_levels` > 0, outputs 1..n_levels are the radius-level logits."""

    def __init__(self, model, seed: int = 0, n_levels: int = 0):
        import torch

        merger = vision_merger(model)
        width = model.config.text_config.hidden_size
        gen = torch.Generator().manual_seed(seed)
        self.n_levels = n_levels
        self.linear = torch.nn.Linear(width, 1 + n_levels)
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

    def loss(self, targets, valid, levels=None):
        """Mean BCE of the last forward's cell logits against `targets` (one 0/1 per cell) over `valid` cells;
        plus, with radius levels, the mean cross-entropy of the level logits on cells whose `levels` is >= 0."""
        import torch

        feats, self._features = self._features, None
        if feats is None:
            raise AuxLossError("no vision features captured: the forward had no image")
        if feats.shape[0] != targets.shape[0]:
            raise AuxLossError(f"{feats.shape[0]} merged image cells but {targets.shape[0]} cell targets")
        out = self.linear(feats.float())
        logits = out[:, 0][valid]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[valid].to(logits.device))
        if self.n_levels and levels is not None:
            if levels.shape[0] != targets.shape[0]:
                raise AuxLossError(f"{targets.shape[0]} cell targets but {levels.shape[0]} cell levels")
            levels = levels.to(out.device)
            known = valid.to(out.device) & (levels >= 0)
            if bool(known.any()):
                loss = loss + torch.nn.functional.cross_entropy(out[known, 1:], levels[known])
        return loss

    def remove(self) -> None:
        """Detach the hook, leaving the model exactly as it was built."""
        self._handle.remove()
        self._features = None
