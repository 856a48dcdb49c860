"""Each supported family builds offline as a real HF directory that transformers loads without a missing or
unexpected tensor, whose processor expands the image placeholder exactly as `image_token_count` says, and
whose forward runs on a collated preference batch (the learner's own collation)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from medpo_ray.config import LossConfig
from medpo_ray.editing.pairs import PreferencePair
from medpo_ray.models.corpus import grammar_texts
from medpo_ray.models.factory import build_model
from medpo_ray.models.families import FAMILIES, family_of, rename
from medpo_ray.models.inputs import image_token_count, open_image
from medpo_ray.models.loading import check_model_dir, load_processor
from medpo_ray.models.presets import get_preset
from medpo_ray.training.collate import Collator

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def texts():
    return grammar_texts(studies=60)


def _png(seed: int) -> bytes:
    a = (np.random.default_rng(seed).random((112, 112, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_tiny_member_of_each_family_is_a_real_hf_directory(name, texts, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / name
    build_model(out, get_preset("tiny"), texts, family=name)
    check_model_dir(out)
    config = json.loads((out / "config.json").read_text())
    assert family_of(config["model_type"]).name == name
    model, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        saved = set(f.keys())
    for old, new in FAMILIES[name].hub_prefixes:  # laid out as the family's hub checkpoints are
        assert not any(n.startswith(old) and not n.startswith(new) for n in saved)

    processor = load_processor(out)
    image = open_image(_png(0))
    n = image_token_count(processor, image)
    pair = PreferencePair(record_id="r0", y_plus="Yes.", y_minus="No.", spans_plus=((0, 3),),
                          spans_minus=((0, 2),), branch="A", critic="reference", raw="", policy_version=0,
                          prompt="Is there a nodule in the left lung?", image=_png(0), corrupt_image=_png(1))
    collated = Collator(out, LossConfig())([pair])
    assert not collated.bad, collated.bad
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert all(int((row == image_id).sum()) == n for row in collated.inputs["input_ids"])
    assert ("mm_token_type_ids" in collated.inputs) == ("mm_token_type_ids" in processor.model_input_names)
    with torch.no_grad():
        logits = model(**collated.inputs).logits
    assert logits.shape[:2] == collated.inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_prefixes_rename_only_names_not_yet_under_the_new_prefix():
    prefixes = (("model.vision_tower.", "model.vision_tower.vision_model."),)
    assert rename("model.vision_tower.embeddings.x", prefixes) == "model.vision_tower.vision_model.embeddings.x"
    assert rename("model.vision_tower.vision_model.a", prefixes) == "model.vision_tower.vision_model.a"
    assert rename("model.language_model.a", prefixes) == "model.language_model.a"


def test_the_config_offers_exactly_the_families_there_are():
    import typing

    from medpo_ray.config import ModelConfig

    assert typing.get_args(ModelConfig.model_fields["family"].annotation) == tuple(FAMILIES)


def test_the_embedded_policys_tokenizer_is_what_every_recorded_figure_was_measured_with():
    # A golden value on purpose: the demo's and the study's figures (README, RESULTS.md) come from policies
    # with this tokenizer; training it on other template words (as adding LLaVA's once did) changes every
    # built model's vocabulary, and with it every measured number.
    import hashlib

    from medpo_ray.models.tokenizer import train_tokenizer

    vocab = train_tokenizer(grammar_texts(studies=50), 1000).get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()
    assert digest == "6a62fa96c48750720998e7d9ae2baf4abfaddde9f75ee4f4a4ab5f82a17bab78"
