"""The learner side of FiRe-MPO training, without Ray: DeepSpeed config, optimizer and schedule, LoRA or
full fine-tuning against a frozen reference, one `Learner` per data-parallel rank, weight export for the
rollout engines, and checkpoints that resume a run exactly."""
from medpo_ray.training.errors import CheckpointError, LearnerFailed, TrainBatchError

__all__ = ["CheckpointError", "LearnerFailed", "TrainBatchError"]
