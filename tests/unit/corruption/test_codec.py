"""Corruption on encoded images and records: decoding, bad bytes named by field, per-record errors."""
import io

import numpy as np
import pytest
from PIL import Image

from medpo_ray.config import CorruptionConfig
from medpo_ray.corruption import CorruptionError, corrupt_png, corrupt_records, decode_image
from medpo_ray.data.record import Record

pytestmark = pytest.mark.unit

IMG = (np.add.outer(np.arange(48), np.arange(64)) % 200 + 20).astype(np.uint8)
MASK = np.zeros((48, 64), np.uint8)
MASK[10:16, 20:30] = 2  # instance ids, not just 255: any nonzero value is lesion


def encoded(array, fmt="PNG", mode=None):
    buf = io.BytesIO()
    im = Image.fromarray(array)
    (im.convert(mode) if mode else im).save(buf, format=fmt)
    return buf.getvalue()


def rec(rid, task="vqa", **kw):
    return Record(record_id=rid, task=task, image=kw.pop("image", encoded(IMG)), prompt="q", target="a", **kw)


def test_png_round_trip_keeps_outside_pixels():
    cfg = CorruptionConfig(dilate_px=0)
    png, note = corrupt_png(encoded(IMG), mask_png=encoded(MASK), mode="noise", key="r1", cfg=cfg)
    out = decode_image(png)
    assert note["region"] == "mask" and note["region_pixels"] == 60
    assert np.array_equal(out[MASK == 0], IMG[MASK == 0]) and not np.array_equal(out, IMG)
    # IMG is a linear ramp, which is harmonic: inpainting must give it back exactly (after rounding).
    png, note = corrupt_png(encoded(IMG), mask_png=encoded(MASK), key="r1", cfg=cfg)
    assert note["mode"] == "inpaint" and np.array_equal(decode_image(png), IMG)
    control, cnote = corrupt_png(encoded(IMG), mask_png=encoded(MASK), key="r1", control=True)
    assert cnote["region"] == "control" and np.array_equal(decode_image(control)[MASK > 0], IMG[MASK > 0])


@pytest.mark.parametrize(("fmt", "mode", "shape"), [("PNG", "RGBA", (48, 64, 3)), ("PNG", "P", (48, 64, 3)),
                                                     ("JPEG", None, (48, 64)), ("PNG", "LA", (48, 64))])
def test_other_formats_decode_to_8_bit(fmt, mode, shape):
    assert decode_image(encoded(IMG, fmt, mode)).shape == shape


@pytest.mark.parametrize(("data", "message"), [
    (b"", "image: no image bytes"),
    (b"not an image at all", "image: not a recognised image format"),
    (encoded(IMG)[:60], "image: cannot decode image"),
])
def test_bad_bytes_are_named(data, message):  # (16-bit grey is scaled, not refused: tests/unit/data/test_pixels.py)
    with pytest.raises(CorruptionError, match=f"^{message}"):
        decode_image(data)


def test_records_errors_are_per_record():
    records = [rec("ok", lesion_mask=encoded(MASK)), rec("truncated", image=encoded(IMG)[:50]),
               rec("mask-shape", lesion_mask=encoded(MASK[:10])), rec("box", boxes=((500, 1, 600, 9),)),
               rec("report", task="report", lesion_mask=encoded(MASK))]
    done, bad = corrupt_records(records)
    assert [c.record_id for c in done] == ["ok", "report"]
    assert [(b.record_id, b.field) for b in bad] == [("truncated", "image"), ("mask-shape", "lesion_mask"),
                                                     ("box", "boxes[0]")]
    assert "record 'mask-shape', field 'lesion_mask': shape (10, 64)" in str(bad[1])
    assert done[1].note["region"] == "mask"
    done, _ = corrupt_records(records[-1:], CorruptionConfig(reports="whole"))
    assert done[0].note == {**done[0].note, "region": "whole", "mode": "noise"}
