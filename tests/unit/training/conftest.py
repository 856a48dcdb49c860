"""Fixtures of the learner unit tests: the tiny policy, built once per session by the model factory."""
import pytest

from tests.unit.training.examples import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("training") / "tiny")
