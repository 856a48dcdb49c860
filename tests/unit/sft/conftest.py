"""A few embedded studies and a tiny random-init policy built from their text, once per session."""
import pytest

from medpo_ray.data.lesions import LesionParams
from medpo_ray.data.synth import synthesize

N_STUDIES = 20
SIZE = 112


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A 20-study embedded dataset (seed 0, 112 px, difficulty 0.5)."""
    out = tmp_path_factory.mktemp("sft_data")
    synthesize(out, N_STUDIES, 0, SIZE, LesionParams.from_difficulty(0.5, SIZE),
               args={"difficulty": 0.5, "amplitude": None, "radius_min": None, "radius_max": None})
    return out


@pytest.fixture(scope="session")
def levels_records(tmp_path_factory):
    """Every record of a 20-study embedded dataset with 3 discrete lesion radii (4, 9, 14 px)."""
    from medpo_ray.data.sources.embedded import EmbeddedSource

    out = tmp_path_factory.mktemp("sft_levels_data")
    synthesize(out, N_STUDIES, 0, SIZE, LesionParams.from_difficulty(0.5, SIZE, radius_levels=3))
    loaded = EmbeddedSource(out).load()
    assert not loaded.bad
    return loaded.records


@pytest.fixture(scope="session")
def records(data_dir):
    """Every record (reports and VQA, all splits) of the dataset."""
    from medpo_ray.data.sources.embedded import EmbeddedSource

    loaded = EmbeddedSource(data_dir).load()
    assert not loaded.bad
    return loaded.records


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, data_dir):
    """The `tiny` preset with a tokenizer trained on the dataset's text."""
    from medpo_ray.models.corpus import dataset_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    out = tmp_path_factory.mktemp("sft_model")
    build_model(out, get_preset("tiny"), dataset_texts(data_dir), seed=0)
    return out


@pytest.fixture(scope="session")
def processor(model_dir):
    """The tiny policy's processor."""
    from medpo_ray.models.loading import load_processor

    return load_processor(model_dir)
