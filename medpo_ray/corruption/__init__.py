"""Lesion-aware image corruption (x -> x~): noise, blur, black or inpainting inside the lesion region.

Deterministic by key (record id, qid); pixels outside the region stay bit-identical; without a mask
or boxes the whole image gets mild noise. `control_corruption` moves the same region to a lesion-free
place, for grounding evaluation.
"""
from medpo_ray.corruption.codec import CorruptedImage, corrupt_png, corrupt_records, decode_image, encode_png
from medpo_ray.corruption.corrupt import MODES, CorruptionResult, control_corruption, corrupt_image, rng_for
from medpo_ray.corruption.errors import CorruptionError

__all__ = [
    "MODES",
    "CorruptedImage",
    "CorruptionError",
    "CorruptionResult",
    "control_corruption",
    "corrupt_image",
    "corrupt_png",
    "corrupt_records",
    "decode_image",
    "encode_png",
    "rng_for",
]
