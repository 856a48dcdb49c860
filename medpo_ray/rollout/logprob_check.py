"""Do vLLM and transformers agree on the policy? Score the engine's completions with a transformers
forward of the same weights and report the gap (`logprob_mismatch`; peers lose weeks to a silent one)."""
from __future__ import annotations

from collections.abc import Sequence

from medpo_ray.models.inputs import build_batch, model_inputs, open_image


def completion_logprobs(model, batch: dict) -> list[list[float]]:
    """log p(completion token | prefix) per row of a `build_batch` batch, from one forward."""
    import torch

    inputs = model_inputs(batch)
    if isinstance(model, torch.nn.Module):  # a module on a GPU scores inputs built on the CPU (the learner's
        device = next(model.parameters()).device  # callable moves them itself)
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    with torch.no_grad():
        logits = model(**inputs).logits.float().cpu()
    # Logits at t predict token t+1.
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logp.gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    mask = batch["completion_mask"][:, 1:].bool()
    return [picked[i][mask[i]].tolist() for i in range(picked.shape[0])]


def gold_token_logprobs(model, processor, records: Sequence, batch_size: int = 8) -> list[list[tuple[str, float]]]:
    """(token text, log p(token | image, prompt, gold prefix)) for every token of each record's gold answer
    (`record.target`, tokenized as training tokenizes a completion: no special tokens)."""
    tok = processor.tokenizer
    out: list[list[tuple[str, float]]] = []
    for start in range(0, len(records), batch_size):
        chunk = records[start: start + batch_size]
        ids = [tok(r.target, add_special_tokens=False)["input_ids"] for r in chunk]
        batch = build_batch(processor, [open_image(r.image, r.record_id) for r in chunk],
                            [r.prompt for r in chunk], ids)
        for row_ids, lps in zip(ids, completion_logprobs(model, batch), strict=True):
            out.append([(tok.decode([i]), lp) for i, lp in zip(row_ids, lps, strict=True)])
    return out


def logprob_mismatch(model, processor, rollouts: Sequence, images: dict, prompts: dict,
                     batch_size: int = 8) -> dict:
    """Compare each rollout's vLLM log-probs with transformers on the same (image, prompt, tokens).

    `images` / `prompts` map record_id to the request's image and prompt text. Returns the max and mean
    |difference| over all completion tokens, and how many prompts tokenized differently in the two
    stacks (a non-zero count means the comparison itself is not like for like).
    """
    diffs: list[float] = []
    prompt_mismatches = 0
    for start in range(0, len(rollouts), batch_size):
        chunk = [r for r in rollouts[start: start + batch_size] if r.token_ids]
        if not chunk:
            continue
        batch = build_batch(processor, [open_image(images[r.record_id], r.record_id) for r in chunk],
                            [prompts[r.record_id] for r in chunk], [r.token_ids for r in chunk])
        hf = completion_logprobs(model, batch)
        for r, n_prompt, ids, row in zip(chunk, batch["prompt_lengths"], batch["input_ids"], hf, strict=True):
            prompt_mismatches += ids[:n_prompt].tolist() != list(r.prompt_token_ids)
            diffs.extend(abs(a - b) for a, b in zip(r.logprobs, row, strict=True))
    return {"logprob_max_abs_diff": max(diffs, default=0.0),
            "logprob_mean_abs_diff": sum(diffs) / len(diffs) if diffs else 0.0,
            "tokens": len(diffs), "prompt_mismatches": prompt_mismatches}
