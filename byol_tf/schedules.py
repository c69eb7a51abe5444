"""Learning-rate and target-decay schedules (DeepMind's `byol/utils/schedules.py`)."""

import math

import keras
from keras import ops


def cosine_decay(step, total_steps, initial_value):
    """`initial_value · (1 + cos(π·min(step, K)/K)) / 2`."""
    step = ops.minimum(ops.cast(step, "float32"), float(total_steps))
    return initial_value * 0.5 * (1.0 + ops.cos(math.pi * step / float(total_steps)))


def target_decay(step, tau_base, total_steps):
    """BYOL's EMA rate τ_k = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2: τ_base at k = 0, 1 at k = K."""
    return 1.0 - (1.0 - tau_base) * cosine_decay(step, total_steps, 1.0)


def scaled_learning_rate(base_learning_rate, batch_size):
    """The paper's linear scaling rule: base · batch / 256."""
    return base_learning_rate * batch_size / 256.0


@keras.saving.register_keras_serializable(package="byol_tf")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `base·batch/256` over `warmup_steps`, then cosine to 0
    at `total_steps`."""

    def __init__(self, base_learning_rate, batch_size, total_steps, warmup_steps):
        if total_steps <= warmup_steps:
            raise ValueError(f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps})")
        self.base_learning_rate = base_learning_rate
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        peak = scaled_learning_rate(self.base_learning_rate, self.batch_size)
        step = ops.cast(step, "float32")
        warm = step / max(self.warmup_steps, 1) * peak
        decayed = cosine_decay(step - self.warmup_steps,
                               self.total_steps - self.warmup_steps, peak)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return dict(base_learning_rate=self.base_learning_rate, batch_size=self.batch_size,
                    total_steps=self.total_steps, warmup_steps=self.warmup_steps)
