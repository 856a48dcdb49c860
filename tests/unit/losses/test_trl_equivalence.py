"""Preset `dpo` equals TRL's sigmoid DPO loss (value and gradients) on the same model, pairs and reference
(LOSS.md (e) 3). TRL's own code computes its side: DPOTrainer.compute_loss on batches from TRL's collator."""
import pytest
import torch

from medpo_ray.config import LossConfig
from medpo_ray.losses import build_preference_batch, fire_mpo_loss, needed_pairs
from tests.unit.losses.tiny import build_model

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def trl_side(tok, tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    model, ref = build_model(len(tok), seed=0), build_model(len(tok), seed=1)
    args = trl.DPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), report_to=[], beta=0.25, use_cpu=True,
                         bf16=False, loss_type=["sigmoid"], save_strategy="no")
    dummy = datasets.Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]})
    trainer = trl.DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dummy, processing_class=tok)
    return trainer, model, ref


def _grads(model):
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def test_dpo_preset_equals_trl_sigmoid_loss(tok, examples, trl_side):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    trainer, model, ref = trl_side
    trl_inputs = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([
        {"prompt_ids": list(ex.prompt_ids),
         "chosen_ids": tok(ex.chosen, add_special_tokens=False)["input_ids"] + [tok.eos_token_id],
         "rejected_ids": tok(ex.rejected, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]}
        for ex in examples])
    cfg = LossConfig.from_preset("dpo", beta=0.25)
    batch = build_preference_batch(examples, tok, pairs=needed_pairs(cfg))
    # The builder lays the pairs out exactly like TRL's [chosen; rejected] concatenation.
    assert torch.equal(batch.input_ids, trl_inputs["input_ids"])
    assert torch.equal(batch.completion_mask, trl_inputs["completion_mask"])
    assert torch.equal(batch.attention_mask, trl_inputs["attention_mask"])

    model.zero_grad(set_to_none=True)
    trl_loss = trainer.compute_loss(model, trl_inputs)
    trl_loss.backward()
    trl_grads = _grads(model)

    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    with torch.no_grad():
        ref_logits = ref(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    loss, _ = fire_mpo_loss(logits, ref_logits, batch, cfg)
    loss.backward()
    ours = _grads(model)

    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
    assert abs(trl_loss.item() - 0.6931) > 1e-2, "policy and reference must differ for a meaningful check"
    assert ours.keys() == trl_grads.keys()
    for name, g in trl_grads.items():
        # fp32 sums over thousands of terms in different orders: compare at fp32 noise level.
        assert (ours[name] - g).norm() <= 1e-5 * g.norm() + 1e-8, name
        torch.testing.assert_close(ours[name], g, rtol=1e-3, atol=1e-5)
