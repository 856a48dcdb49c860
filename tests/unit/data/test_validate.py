import io
import os
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from medpo_ray.data.record import Record
from medpo_ray.data.validate import (
    Limits,
    RecordError,
    check_boxes,
    check_image,
    check_record,
    check_text,
    inside_root,
)
from tests.unit.data.layouts import image, mask

pytestmark = pytest.mark.unit


def _record(**changes) -> Record:
    base = {"record_id": "r1", "task": "vqa", "image": image(32, 24), "prompt": "Is there a nodule?",
            "target": "yes"}
    return Record(**{**base, **changes})


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height: what a decompression bomb looks like before decoding."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_clean_record_passes():
    assert check_record(_record(lesion_mask=mask(32, 24), boxes=((1, 2, 10, 12),))) is None


@pytest.mark.parametrize("data, expected", [
    (image(fmt="PNG")[: len(image(fmt="PNG")) // 2], "truncated PNG"),
    (image(fmt="JPEG")[:-40], "truncated JPEG"),
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "truncated image"),
    (b"plain text, not an image", "not a recognised image format (first bytes: 70 6c 61 69"),
    (b"", "empty"),
    (_png_header_only(8000, 8000), "8000x8000 PNG has 64,000,000 pixels, over the limit of 50,000,000"),
    (_png_header_only(100_000, 100_000), "decompression-bomb guard"),
])
def test_bad_image_bytes_are_named(data, expected):
    bad = check_record(_record(image=data))
    assert bad is not None and bad.record_id == "r1" and bad.field == "image"
    assert expected in bad.reason


def test_corrupt_png_data_is_named():
    data = bytearray(image(64, 64))
    data[60:70] = b"\x00" * 10  # inside the IDAT chunk: CRC and zlib stream break
    bad = check_record(_record(image=bytes(data)))
    assert bad.field == "image" and "corrupt PNG" in bad.reason


def test_image_check_reports_size_of_good_bytes():
    assert check_image(image(40, 30, fmt="JPEG")) == (40, 30)
    with pytest.raises(RecordError, match="expected encoded image bytes, got str"):
        check_image("not bytes")


def test_pixel_limit_is_configurable():
    bad = check_record(_record(image=image(32, 24)), limits=Limits(max_image_pixels=100))
    assert bad.field == "image" and "768 pixels, over the limit of 100" in bad.reason


def test_prompt_over_the_limit_names_the_config_key():
    bad = check_record(_record(prompt="x" * (1 << 20)))
    assert (bad.field, bad.reason) == ("question", "1,048,576 characters, over the limit of 8,192 (data.max_prompt_chars)")
    assert check_record(_record(prompt="x" * 9000), limits=Limits(max_prompt_chars=10_000)) is None


@pytest.mark.parametrize("value, reason", [
    ("   ", "empty"),
    (b"caf\xe9", "not valid UTF-8 (byte 0xe9 at offset 3)"),
    (b"\xff\xfeab".decode("utf-8", "surrogateescape"), "not valid UTF-8 (undecodable character at offset 0)"),
    ("a\x00b", "contains a NUL character at offset 1"),
    (17, "expected text, got int"),
])
def test_bad_text(value, reason):
    with pytest.raises(RecordError) as e:
        check_text(value, "question", 100, "data.max_prompt_chars")
    assert (e.value.field, e.value.reason) == ("question", reason)
    bad = check_record(_record(target=value))
    assert bad.field == "answer" and bad.reason == reason
    bad = check_record(_record(task="report", target=value))
    assert bad.field == "report" and bad.reason == reason


def test_valid_utf8_bytes_and_non_ascii_text_pass():
    assert check_text("Épanchement pleural gauche 左侧", "t", 100, "k") == "Épanchement pleural gauche 左侧"
    assert check_text("café".encode(), "t", 100, "k") == "café"


def test_mask_of_another_shape_is_named():
    bad = check_record(_record(image=image(32, 24), lesion_mask=mask(24, 32)))
    assert (bad.field, bad.reason) == ("lesion_mask", "mask is 24x32 but the image is 32x24")
    bad = check_record(_record(lesion_mask=b"\x00\x01"))
    assert bad.field == "lesion_mask" and "not a recognised image format" in bad.reason


@pytest.mark.parametrize("boxes, field, reason", [
    (((5, 5, 3, 9),), "boxes[0]", "empty box"),
    (((0, 0, 4, 4), (0, 0, 40, 4)), "boxes[1]", "outside the 32x24 image"),
    (((0, 0, float("nan"), 4),), "boxes[0]", "non-finite"),
    (((0, 0, 4),), "boxes[0]", "expected 4 numbers"),
])
def test_bad_boxes(boxes, field, reason):
    with pytest.raises(RecordError) as e:
        check_boxes(boxes, 32, 24)
    assert e.value.field == field and reason in e.value.reason


def test_paths_must_stay_inside_the_root(tmp_path):
    root = tmp_path / "data"
    (root / "imgs").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(image())
    assert inside_root(root, "imgs/a.png", "image") == (root / "imgs" / "a.png").resolve()
    with pytest.raises(RecordError, match="escapes the dataset root") as e:
        inside_root(root, "imgs/../../secret.png", "img_name")
    assert e.value.field == "img_name"
    os.symlink(tmp_path / "secret.png", root / "imgs" / "link.png")  # a link inside pointing outside
    with pytest.raises(RecordError, match="'imgs/link.png' escapes"):
        inside_root(root, "imgs/link.png", "image")
    bad = check_record(_record(meta={"image_path": "imgs/link.png"}), root=root)
    assert bad.field == "image_path" and "escapes the dataset root" in bad.reason


def test_structural_fields_are_checked():
    assert check_record(_record(task="caption")).field == "task"
    assert check_record(_record(split="")).field == "split"
    assert check_record(_record(record_id="")).record_id == "<no id>"


def test_sixteen_bit_png_is_a_valid_image():
    buf = io.BytesIO()
    Image.new("I;16", (20, 10), 40000).save(buf, format="PNG")
    assert check_image(buf.getvalue()) == (20, 10)


_PNG = image(16, 12)


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.integers(0, len(_PNG) - 1).map(lambda n: _PNG[:n]),
    st.tuples(st.integers(0, len(_PNG) - 1), st.integers(0, 255)).map(
        lambda p: _PNG[: p[0]] + bytes([p[1]]) + _PNG[p[0] + 1:]),
))
def test_any_bytes_give_a_size_or_a_named_reason(data):
    """Never a traceback for bad data: arbitrary, truncated or bit-flipped image bytes."""
    try:
        width, height = check_image(data)
    except RecordError as e:
        assert e.field == "image" and e.reason
    else:
        assert width > 0 and height > 0


def test_numpy_coordinates_are_numbers_and_nul_paths_are_named(tmp_path):
    import numpy as np

    check_boxes(((np.int64(1), np.float32(2), 10, 12),), 32, 24)
    with pytest.raises(RecordError, match="cannot be resolved"):
        inside_root(tmp_path, "imgs/a\x00.png", "img_name")
