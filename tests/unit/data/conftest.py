"""A small embedded dataset generated once for the data tests."""
import pytest

from medpo_ray.data.lesions import LesionParams
from medpo_ray.data.synth import synthesize

N_STUDIES = 40
SIZE = 112


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory):
    """Directory of a 40-study embedded dataset (seed 0, 112 px, difficulty 0.5)."""
    out = tmp_path_factory.mktemp("embedded")
    synthesize(out, N_STUDIES, 0, SIZE, LesionParams.from_difficulty(0.5, SIZE))
    return out


@pytest.fixture(scope="session")
def studies(embedded_dir):
    """The rows of studies.parquet as dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(embedded_dir / "studies.parquet").to_pylist()


@pytest.fixture(scope="session")
def questions(embedded_dir):
    """The rows of vqa.parquet as dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(embedded_dir / "vqa.parquet").to_pylist()
