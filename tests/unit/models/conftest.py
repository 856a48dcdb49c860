"""A tiny policy built once per test session (deterministic, so every test sees the same bytes)."""
import io

import numpy as np
import pytest
from PIL import Image


def png(seed: int, width: int = 112, height: int = 112, mode: str = "L") -> bytes:
    """A noise image of the given size, PNG-encoded."""
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    buf = io.BytesIO()
    Image.fromarray((rng.random(shape) * 255).astype("uint8"), mode=mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Path of a tiny-preset model built from the embedded grammar's text."""
    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    # One build per session even though tests/unit/rollout re-exports this fixture (a second
    # definition, hence a second session cache): the directory itself is the cache.
    out = tmp_path_factory.getbasetemp() / "tiny-model"
    if not (out / "medpo_model.json").is_file():
        build_model(out, get_preset("tiny"), grammar_texts(studies=300), seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_policy(tiny_model_dir):
    """(model, processor) of the tiny policy in transformers, fp32."""
    from medpo_ray.models.loading import load_policy, load_processor

    return load_policy(tiny_model_dir), load_processor(tiny_model_dir)
