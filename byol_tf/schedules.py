"""Learning-rate and target-EMA schedules (DeepMind's `byol/utils/schedules.py`)."""

import math

import keras
from keras import ops


def cosine_decay(step, total_steps, initial_value, dtype="float32"):
    """`initial_value · (1 + cos(π·min(step, K)/K)) / 2`, computed in `dtype`."""
    step = ops.minimum(ops.cast(step, dtype), float(total_steps))
    return initial_value * 0.5 * (1.0 + ops.cos(math.pi * step / float(total_steps)))


def target_ema(step, tau_base, total_steps, dtype="float32"):
    """BYOL's EMA rate τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2: τ_base at k = 0, 1 at k = K.
    Computed in `dtype` (the target weights' dtype)."""
    return 1.0 - (1.0 - tau_base) * cosine_decay(step, total_steps, 1.0, dtype)


def scaled_learning_rate(base_learning_rate, batch_size):
    """The paper's linear scaling rule: base · batch / 256."""
    return base_learning_rate * batch_size / 256.0


@keras.saving.register_keras_serializable(package="byol_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `base·batch/256` over `warmup_steps`, then cosine to 0
    at `total_steps`. Computed in Keras' float type (`keras.config.floatx()`: float64 in a
    float64 run).

    Args:
      base_learning_rate: float. The paper's base rate, scaled by batch/256.
      batch_size: int. Global batch size.
      total_steps: int. Steps of the whole run (the cosine reaches 0 there).
      warmup_steps: int. Steps of the linear warm-up; must be < total_steps.
    """

    def __init__(self, base_learning_rate, batch_size, total_steps, warmup_steps):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.base_learning_rate = base_learning_rate
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        peak = scaled_learning_rate(self.base_learning_rate, self.batch_size)
        dtype = keras.config.floatx()
        step = ops.cast(step, dtype)
        warm = step / max(self.warmup_steps, 1) * peak
        decayed = cosine_decay(step - self.warmup_steps,
                               self.total_steps - self.warmup_steps, peak, dtype)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return dict(base_learning_rate=self.base_learning_rate, batch_size=self.batch_size,
                    total_steps=self.total_steps, warmup_steps=self.warmup_steps)


@keras.saving.register_keras_serializable(package="byol_tf")
class PerOptimizerStep(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` counted in optimizer steps of `accumulation_steps` batches each. (Keras'
    optimizer with `gradient_accumulation_steps` calls its schedule with the batches it was
    applied to, not with its updates: `schedule(batches // accumulation_steps)` is the
    paper's rate at every update.)

    Args:
      schedule: a `LearningRateSchedule` over optimizer steps.
      accumulation_steps: int ≥ 1. Batches per optimizer step.
    """

    def __init__(self, schedule, accumulation_steps):
        self.schedule, self.accumulation_steps = schedule, int(accumulation_steps)

    def __call__(self, step):
        return self.schedule(ops.floor_divide(step, self.accumulation_steps))

    def get_config(self):
        return dict(schedule=keras.saving.serialize_keras_object(self.schedule),
                    accumulation_steps=self.accumulation_steps)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
