"""Images the model's processor refuses are found from their headers, before any actor starts."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from medpo_ray.data.preflight import processor_refusals
from medpo_ray.data.record import Record

pytestmark = pytest.mark.unit


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 128).save(buf, format="PNG")
    return buf.getvalue()


def test_an_aspect_ratio_the_processor_refuses_is_named(tiny_model_dir):
    records = [Record("ok", "vqa", _png(112, 112), "Is there a nodule?", "yes"),
               Record("strip", "vqa", _png(2000, 2), "Is there a nodule?", "yes"),
               Record("tall", "vqa", _png(3, 900), "Is there a nodule?", "yes")]
    refused = processor_refusals(records, tiny_model_dir)
    assert set(refused) == {"strip", "tall"}
    assert refused["strip"].startswith("image: image 2000x2 rejected by the processor: absolute aspect ratio")
