import pytest

from medpo_ray.cursor import DataCursor
from medpo_ray.errors import MedpoError

pytestmark = pytest.mark.unit


def test_epochs_visit_every_id_once_in_a_seeded_order():
    ids = [f"r{i}" for i in range(10)]
    c = DataCursor(ids, seed=3)
    first, second = c.take(10), c.take(10)
    assert sorted(map(c.record_id, first)) == sorted(ids) == sorted(map(c.record_id, second))
    assert set(first).isdisjoint(second)  # keys are per epoch
    assert [c.record_id(k) for k in first] != [c.record_id(k) for k in second]  # a new permutation
    assert DataCursor(ids, seed=3).take(10) == first
    assert first[0].endswith("@0") and second[0].endswith("@1")
    assert DataCursor(ids, seed=4).take(10) != first


def test_resume_continues_exactly():
    ids = [f"r{i}" for i in range(7)]
    a = DataCursor(ids, seed=1)
    a.take(5)
    b = DataCursor.restore(ids, a.state())
    assert a.take(9) == b.take(9)


def test_bad_inputs_are_clear():
    with pytest.raises(MedpoError, match="no records"):
        DataCursor([])
    with pytest.raises(MedpoError, match="not unique"):
        DataCursor(["a", "a"])
    with pytest.raises(MedpoError, match="changed since the checkpoint"):
        DataCursor.restore(["a"], DataCursor(["a", "b"]).state())
