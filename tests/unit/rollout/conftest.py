"""Reuse the session's tiny policy from the models tests."""
from tests.unit.models.conftest import tiny_model_dir, tiny_policy  # noqa: F401
