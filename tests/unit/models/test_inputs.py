"""Model inputs: image decoding errors, image token counts, the scoring batch and its masks."""
import pytest

from medpo_ray.models.inputs import (
    ImageError,
    build_batch,
    encode_completion,
    image_token_count,
    open_image,
    render_prompt,
)
from tests.unit.models.conftest import png

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("data", [b"", b"GIF89a-truncated", "a string", None])
def test_unreadable_images_name_the_item(data):
    with pytest.raises(ImageError, match="item 'rec-7'"):
        open_image(data, "rec-7")


def test_grey_png_becomes_rgb():
    img = open_image(png(1, mode="L"))
    assert img.mode == "RGB" and img.size == (112, 112)


def test_image_token_counts_follow_the_pixel_budget(tiny_policy):
    _, processor = tiny_policy
    assert image_token_count(processor, open_image(png(0, 112, 112))) == 16
    assert image_token_count(processor, open_image(png(0, 448, 448))) == 16  # capped at 112 x 112 pixels
    assert image_token_count(processor, open_image(png(0, 56, 56))) == 4
    with pytest.raises(ImageError, match="item 'thin'.*aspect ratio"):
        image_token_count(processor, open_image(png(0, 600, 2)), "thin")


def test_prompt_uses_the_chat_template_with_one_image(tiny_policy):
    _, processor = tiny_policy
    text = render_prompt(processor, "Is there a nodule?")
    assert text.count("<|image_pad|>") == 1 and text.endswith("<|im_start|>assistant\n")
    assert "Is there a nodule?" in text


def test_completion_text_can_never_become_an_image_token(tiny_policy):
    _, processor = tiny_policy
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = encode_completion(processor, "see <|image_pad|> here")
    assert image_id not in ids
    assert processor.tokenizer.decode(ids) == "see <|image_pad|> here"


def test_batch_marks_image_and_completion_positions(tiny_policy):
    _, processor = tiny_policy
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    comps = [encode_completion(processor, "No nodule."), encode_completion(processor, "A 12 mm large nodule.")]
    batch = build_batch(processor, [open_image(png(0)), open_image(png(1))], ["Report.", "Report."], comps)
    ids, types, comp, att = (batch[k] for k in ("input_ids", "mm_token_type_ids", "completion_mask",
                                                "attention_mask"))
    assert ids.shape == types.shape == comp.shape == att.shape
    for row, c in enumerate(comps):
        n_prompt = batch["prompt_lengths"][row]
        assert int(types[row].sum()) == 16 and bool(((ids[row] == image_id) == (types[row] == 1)).all())
        assert comp[row].tolist() == [0] * n_prompt + [1] * len(c) + [0] * (ids.shape[1] - n_prompt - len(c))
        assert ids[row, n_prompt: n_prompt + len(c)].tolist() == c
        assert int(att[row].sum()) == n_prompt + len(c)  # right padding only
    assert tuple(batch["image_grid_thw"].tolist()[0]) == (1, 8, 8)
