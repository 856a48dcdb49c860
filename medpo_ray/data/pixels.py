"""Medical bit depths to the 8-bit view the model sees.

DICOM pixel data is usually exported as 16-bit greyscale PNG (PIL mode "I;16", or "I" for 32-bit): a
plain `convert("RGB")` clips every value above 255 to white, so a CT or radiograph becomes a white square.
Such images are scaled linearly from their own minimum to maximum instead (no window is stored in a PNG;
min..max keeps every structure visible and is the same for x and x~, which are cut from this view). Every
reader of image bytes (the rollout engine, the learner's collation, the corruption stage) goes through
`to_8bit`, so all of them see the same pixels.
"""
from __future__ import annotations

import numpy as np

HIGH_DEPTH = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


def to_8bit(im):
    """A PIL image in an 8-bit mode ("L" for every greyscale depth, else what it was): high-depth grey is
    scaled from its min..max to 0..255; a constant image becomes all zero."""
    from PIL import Image

    if im.mode not in HIGH_DEPTH:
        return im
    a = np.asarray(im, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    scaled = np.zeros(a.shape, np.uint8) if hi <= lo else np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")
