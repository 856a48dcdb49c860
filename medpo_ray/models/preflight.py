"""What a model directory must offer a training run, checked before Ray or any actor starts: a chat template
that renders exactly one image placeholder, LoRA targets that name layers of its language model, and GPUs
for every engine and learner rank that asks for one. Each refusal names the file or the config key."""
from __future__ import annotations

from pathlib import Path

from medpo_ray.config import Config
from medpo_ray.models.loading import ModelDirError, load_processor


def check_chat_template(model_dir: str | Path) -> None:
    """The tokenizer's (or processor's) chat template renders a user turn with one image placeholder."""
    from medpo_ray.models.inputs import render_prompt

    processor = load_processor(model_dir)
    tok = processor.tokenizer
    if not (tok.chat_template or getattr(processor, "chat_template", None)):
        raise ModelDirError(f"model directory {str(model_dir)!r} has no chat template (tokenizer_config.json "
                            "'chat_template', chat_template.jinja or chat_template.json): add the family's template")
    tok.chat_template = tok.chat_template or processor.chat_template
    try:
        text = render_prompt(processor, "probe")
    except Exception as e:  # jinja errors of a broken template come in many types
        raise ModelDirError(f"model directory {str(model_dir)!r}: the chat template does not render a user turn "
                            f"with an image: {type(e).__name__}: {e}") from None
    found = text.count(processor.image_token)
    if found != 1:
        raise ModelDirError(f"model directory {str(model_dir)!r}: the chat template renders {found} image "
                            f"placeholder(s) {processor.image_token!r} for one image, expected 1")


def check_lora_targets(model_dir: str | Path, cfg: Config) -> None:
    """Under train.finetune=lora, train.lora_targets match at least one Linear of the language model (the
    model is built on the meta device: no weights are read)."""
    import re

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from medpo_ray.training.finetune import language_model_path, lora_target_regex

    if cfg.train.finetune != "lora":
        return
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(str(model_dir)))
    pattern = re.compile(lora_target_regex(model, cfg.train.lora_targets))
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    if not any(pattern.match(n) for n in linear):
        prefix = language_model_path(model) + "."
        names = sorted({n.rsplit(".", 1)[-1] for n in linear if n.startswith(prefix)})
        raise ModelDirError(f"train.lora_targets {cfg.train.lora_targets} match no layer of the language model "
                            f"of {model_dir}; its Linear layers are named {', '.join(names)}")


def gpus_needed(cfg: Config) -> float:
    """GPUs the run's engines and learner ranks ask for."""
    return (cfg.rollout.num_engines * cfg.rollout.gpus_per_engine
            + cfg.train.num_learners * cfg.train.gpus_per_rank)


def check_gpus(cfg: Config, available: float) -> None:
    """A run that asks for more GPUs than the cluster (or this machine) has is refused naming the keys."""
    need = gpus_needed(cfg)
    if need > available:
        raise ModelDirError(
            f"the run asks for {need:g} GPU(s) (rollout.num_engines {cfg.rollout.num_engines} x "
            f"rollout.gpus_per_engine {cfg.rollout.gpus_per_engine:g} + train.num_learners "
            f"{cfg.train.num_learners} x train.gpus_per_rank {cfg.train.gpus_per_rank:g}) but "
            f"{available:g} can be placed")
