"""Small encoded images for the loader tests (the dataset layouts themselves are written in each test)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def image(width: int = 32, height: int = 24, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A random greyscale image, encoded."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def mask(width: int = 32, height: int = 24) -> bytes:
    """A PNG mask with one labelled rectangle."""
    pixels = np.zeros((height, width), dtype=np.uint8)
    pixels[4:10, 5:12] = 1
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as im:
        return im.size
