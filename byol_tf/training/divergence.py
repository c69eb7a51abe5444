"""Diverging training, caught: a run stops at the first sign, keeps the checkpoints from before
it, and never saves, evaluates or publishes the diverged weights."""

import math

import keras
import numpy as np

from byol_tf import compat


class Diverged(RuntimeError):
    """Training diverged; the message says at which step and how."""


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` when training diverges: a non-finite loss in any step, or (checked at each
    epoch's end) the encoder's representation of a fixed probe batch non-finite or grown more
    than `growth` times its root-mean-square at the start of `fit`. `reason` then says
    which; list it before the callbacks that save, and let them ask `healthy()`.

    Args:
      probe_images: uint8 images [N, S, S, 3] whose representation is watched.
      growth: the factor of growth that counts as exploding.
    """

    def __init__(self, probe_images, growth=1e4):
        super().__init__()
        self.probe_images, self.growth = probe_images, growth
        self.reason, self.initial, self._encoder = None, None, None

    def healthy(self):
        return self.reason is None

    def _scale(self):
        if self._encoder is None:  # (shares the model's weights)
            self._encoder = self.model.image_encoder()
        features = keras.ops.convert_to_numpy(self._encoder(self.probe_images, training=False))
        return float(np.sqrt(np.mean(np.square(features.astype(np.float64)))))

    def _stop(self, reason):
        step = compat.batch_count(self.model.optimizer)
        self.reason = f"at step {step}: {reason}"
        self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self.initial = self._scale()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.reason is None and loss is not None:
            loss = float(np.asarray(keras.ops.convert_to_numpy(loss)).reshape(-1)[0])
            if not math.isfinite(loss):
                self._stop(f"the loss is {loss}")

    def on_epoch_end(self, epoch, logs=None):
        if self.reason is not None:
            return
        scale = self._scale()
        if not math.isfinite(scale):
            self._stop(f"the representation is not finite ({scale})")
        elif self.initial and scale > self.growth * self.initial:
            self._stop(f"the representation's size grew {scale / self.initial:.3g}-fold "
                       f"(root mean square {self.initial:.3g} → {scale:.3g})")
