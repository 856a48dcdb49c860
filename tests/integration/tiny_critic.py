"""A tiny LLM critic for the pipeline test: the tiny preset fine-tuned, text only, to answer the critic prompt
(medpo_ray/critics/prompts) with the JSON verdict the reference critic gives on the same answer.

A random-init model behind a vLLM server holds the grammar but not the task: held to the schema at
temperature 0 it picks one verdict for everything (measured: "abstain" with eight edits, cut off at
max_tokens), so no pair would ever come from it. Taught for a few hundred steps on right answers and on
answers with an injected error, it answers like a critic: wrong with the fix, right with a counterfactual.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

STEPS = 200
BATCH = 8


def _examples(records, critic, prompts) -> list[tuple[list[dict], str]]:
    """(chat messages, verdict JSON) for each VQA record's right answer and one wrong answer."""
    from medpo_ray.critics.openai_critic import build_messages
    from medpo_ray.critics.perturb import injections

    out = []
    for r in records:
        if r.task != "vqa":
            continue
        for y0 in [r.target, *(i.text for i in injections(r))]:
            v = critic.review(r, y0)
            if v.verdict == "abstain":
                continue
            answer = {"verdict": v.verdict, "edits": [{"old": e.old, "new": e.new, "kind": e.kind or "other"}
                                                      for e in v.edits], "reason": v.verdict}
            out.append((build_messages(prompts, r, y0), json.dumps(answer, separators=(",", ":"))))
    return out


def build_tiny_critic(out: Path, records) -> Path:
    """The fine-tuned critic model directory (an HF model directory vLLM serves)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from medpo_ray.critics.openai_critic import load_prompts
    from medpo_ray.critics.reference import ReferenceCritic
    from medpo_ray.models.corpus import grammar_texts
    from medpo_ray.models.factory import build_model
    from medpo_ray.models.presets import get_preset

    prompts = load_prompts("v2")
    examples = _examples(records, ReferenceCritic(), prompts)
    texts = [*grammar_texts(), *prompts.values(), *(a for _, a in examples)]
    base = out.with_name(out.name + "-base")
    build_model(base, get_preset("tiny"), texts, seed=0)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    rows = []
    for messages, answer in examples:
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((p_ids + a_ids, [-100] * len(p_ids) + a_ids))
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(STEPS):
        batch = rng.sample(rows, BATCH)
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = (torch.arange(width)[None] < torch.tensor([len(i) for i, _ in batch])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = 3e-3 * min(1.0, (step + 1) / 20) * (1 - step / STEPS)
        opt.step()
        opt.zero_grad()
    shutil.copytree(base, out)
    model.save_pretrained(out, safe_serialization=True)
    return out
