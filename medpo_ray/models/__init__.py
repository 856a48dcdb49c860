"""Policy models: the offline tiny Qwen2-VL factory, its presets and tokenizer, and loading helpers."""
