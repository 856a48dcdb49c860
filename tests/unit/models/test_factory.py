"""The offline model factory: deterministic bytes, a real Qwen2-VL that transformers loads, presets."""
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driver.cli import main
from medpo_ray.errors import MedpoError
from medpo_ray.models.presets import PRESETS, get_preset, qwen2vl_config_kwargs
from medpo_ray.models.tokenizer import SPECIAL_TOKENS, VISION_TOKENS
from tests.unit.models.conftest import png

pytestmark = pytest.mark.unit


def digests(path):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())}


def test_same_args_same_bytes_and_seed_changes_only_weights(tiny_model_dir, tmp_path):
    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.factory import build_model

    texts = grammar_texts(studies=300)
    build_model(tmp_path / "again", get_preset("tiny"), texts, seed=0)
    build_model(tmp_path / "seed1", get_preset("tiny"), texts, seed=1)
    ref, again, seed1 = digests(tiny_model_dir), digests(tmp_path / "again"), digests(tmp_path / "seed1")
    assert again == ref
    assert {n for n in ref if ref[n] != seed1[n]} == {"model.safetensors", "medpo_model.json"}


def test_model_is_a_qwen2vl_that_transformers_runs(tiny_model_dir, tiny_policy):
    model, processor = tiny_policy
    config = json.loads((tiny_model_dir / "config.json").read_text())
    info = json.loads((tiny_model_dir / "medpo_model.json").read_text())
    assert config["architectures"] == ["Qwen2VLForConditionalGeneration"]
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]
    assert 0.5e6 < info["parameters"] < 1.0e6
    # 112 px -> 8 x 8 patches of 14 px -> 4 x 4 merged cells -> 16 image tokens.
    from medpo_ray.models.inputs import open_image

    enc = processor(text=["<|vision_start|><|image_pad|><|vision_end|>hi"], images=[open_image(png(0))])
    assert enc["input_ids"][0].count(config["image_token_id"]) == 16


def test_tokenizer_learned_the_report_vocabulary(tiny_policy):
    _, processor = tiny_policy
    tok = processor.tokenizer
    report = "FINDINGS: A 12 mm moderate nodule in the right lung. No nodule in the left lung."
    ids = tok(report, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == report
    # A byte-level BPE trained elsewhere would spend several tokens per domain word.
    for word in (" nodule", " lung", " moderate", " right", " left"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    for special in SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    assert set(VISION_TOKENS) <= set(SPECIAL_TOKENS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_valid_configs_of_the_documented_size(name):
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    preset = get_preset(name)
    assert sum(preset.mrope_section()) == preset.head_dim // 2
    ids = {t: 500 + i for i, t in enumerate(SPECIAL_TOKENS)}
    with torch.device("meta"):
        model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(**qwen2vl_config_kwargs(preset, 576, ids)))
    n = sum(p.numel() for p in model.parameters())
    expected = {"tiny": (0.5e6, 1.0e6), "demo": (0.5e6, 1.0e6), "small": (25e6, 35e6)}[name]
    assert expected[0] < n < expected[1], n


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(MedpoError, match="tiny, demo, small"):
        get_preset("huge")


def test_cli_trains_the_tokenizer_on_a_dataset(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"report": ["Zorblax in the right lung."] * 50, "image": [b"x"] * 50}),
                   data / "studies.parquet")
    pq.write_table(pa.table({"question": ["Is there a zorblax?"] * 50, "answer": ["yes"] * 50}),
                   data / "vqa.parquet")
    assert main(["model", "tiny", "--out", str(tmp_path / "m"), "--data", str(data)]) == 0
    assert "tokenizer corpus" in capsys.readouterr().out
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    assert len(tok(" zorblax", add_special_tokens=False)["input_ids"]) == 1


def test_cli_reports_a_missing_dataset_without_traceback(tmp_path, capsys):
    assert main(["model", "tiny", "--out", str(tmp_path / "m"), "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "dataset path not found" in err and "Traceback" not in err


def test_config_without_a_path_builds_its_preset_once(tmp_path):
    from medpo_ray.config import ModelConfig
    from medpo_ray.models.factory import resolve_model_dir
    from medpo_ray.models.loading import ModelDirError

    cfg = ModelConfig(preset="tiny", seed=2, build_dir=str(tmp_path))
    first = resolve_model_dir(cfg)
    assert first == tmp_path / "tiny-seed2"
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_dir(cfg) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert resolve_model_dir(ModelConfig(path=str(first))) == first
    with pytest.raises(ModelDirError, match="does not exist"):
        resolve_model_dir(ModelConfig(path=str(tmp_path / "nothing")))
