import pytest

from medpo_ray.ledger import Ledger, LedgerError

pytestmark = pytest.mark.unit


def test_full_lifecycle_accounts_for_every_id(tmp_path):
    led = Ledger()
    led.issue(["a", "b", "c"])
    led.start("rollout", ["a", "b", "c"])
    led.finish("rollout", ["a", "b", "c"])
    led.start("editor", ["a", "b", "c"])
    led.finish("editor", ["a", "b", "c"])
    led.drop(["c"], "critic_abstain")
    led.mark_trained(["a", "b"])
    assert led.lost() == []
    assert led.summary()["trained"] == 2 and led.summary()["dropped"] == {"critic_abstain": 1}
    led.save(tmp_path / "l.json")
    assert Ledger.load(tmp_path / "l.json").to_json() == led.to_json()


def test_training_twice_is_refused():
    led = Ledger()
    led.issue(["a"])
    led.mark_trained(["a"])
    with pytest.raises(LedgerError, match="trained twice"):
        led.mark_trained(["a"])
    with pytest.raises(LedgerError, match="trained twice"):
        Ledger(issued={"x"}).mark_trained(["x", "x"])


def test_reissue_after_actor_death_keeps_ids():
    led = Ledger()
    led.issue(["a", "b"])
    led.start("editor", ["a", "b"])
    ids = led.reissue("editor")
    assert ids == ["a", "b"] and led.reissued["editor"] == 2
    # after re-issue the ids are nowhere: they count as lost until handed out again
    assert led.lost() == ["a", "b"]
    led.start("editor", ids)
    assert led.lost() == []


def test_unknown_and_duplicate_ids_are_errors():
    led = Ledger()
    led.issue(["a"])
    with pytest.raises(LedgerError, match="issued twice"):
        led.issue(["a"])
    with pytest.raises(LedgerError, match="never started"):
        led.finish("rollout", ["a"])
    with pytest.raises(LedgerError, match="never issued"):
        led.mark_trained(["zzz"])
