"""The layers byol_tf's networks are built of: `BatchNorm`, `WSConv2D` and the `MLP` head.

`BatchNorm`: Keras BatchNormalization with TensorFlow's fused kernel.

Same variables, config, moving-statistics rule (biased batch variance, `momentum`) and
results as `keras.layers.BatchNormalization`. On the TensorFlow backend, for float32 or
bfloat16 channels-last inputs (rank 2 or 4) without mask or renorm, it runs
`FusedBatchNormV3` (oneDNN on CPU) in training mode (without global statistics over
several replicas) and in inference mode (the moving statistics): one kernel instead of a
dozen ops, forward and backward.
Other training-mode inputs use `keras.ops.moments` (synchronized over replicas when asked)
and `ops.batch_normalization`; other inference-mode inputs, masks and renorm are Keras' own
code. Either way, per-replica statistics are averaged over replicas before the moving
averages, so replicas stay identical.

Not under XLA (`jit_compile=True`, TPUs): XLA's lowering of the fused kernel's gradient
differs from the exact one (7.7e-3 on a conv kernel gradient of a 4×4-pixel layer at batch 8,
where the TF kernel and Keras agree to 1e-5), and XLA fuses the composite ops anyway.
"""

import keras
from keras import layers, ops

from byol_tf.compat import in_xla_context
from byol_tf.distribute import mean_over_replicas, num_replicas

BN_MOMENTUM = 0.9  # the official batch-norm momentum (decay of the moving averages)
BN_EPSILON = 1e-5  # the official batch-norm epsilon
WS_EPSILON = 1e-5  # weight standardisation's epsilon
HEAD_NORMS = ("batch_norm", "layer_norm", "none")


@keras.saving.register_keras_serializable(package="byol_tf")
class BatchNorm(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel in training and
    inference mode (float32, and bfloat16 inputs under `mixed_bfloat16`, whose statistics
    the kernel computes in float32, as Keras does).

    Args:
      synchronized: bool. Statistics over the global batch under a `tf.distribute`
        strategy; kept in the config on every backend but only acted on under TensorFlow,
        where Keras supports it (with one replica it is the same computation, so the fused
        kernel is used then). Without it, each replica normalises with its own batch and
        the moving statistics average the replicas' (so replicas stay identical).
        Defaults to False.
      **kwargs: `keras.layers.BatchNormalization`'s arguments (momentum, epsilon, …).
    """

    def __init__(self, synchronized=False, **kwargs):
        super().__init__(synchronized=synchronized and keras.backend.backend() == "tensorflow",
                         **kwargs)
        self.sync_requested = synchronized

    def get_config(self):
        return {**super().get_config(), "synchronized": self.sync_requested}

    def _can_fuse(self, inputs, training, mask):
        """Whether this call runs the fused kernel (decided while tracing)."""
        batch_statistics = training and self.trainable
        return (mask is None and not in_xla_context()
                and not self.renorm and self.scale and self.center
                and not (batch_statistics and self.synchronized and num_replicas() > 1)
                and keras.backend.backend() == "tensorflow"
                and self.axis in (-1, len(inputs.shape) - 1)
                and len(inputs.shape) in (2, 4)
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "bfloat16"))

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable):  # the moving statistics
            if self._can_fuse(inputs, training, mask):
                return self._fused(inputs, is_training=False)[0]
            return super().call(inputs, training=training, mask=mask)
        if mask is not None or self.renorm or not (self.scale and self.center):
            return super().call(inputs, training=training, mask=mask)
        if self._can_fuse(inputs, training, mask):
            outputs, mean, variance = self._fused(inputs)
        else:
            x = inputs  # statistics in float32 for 16-bit inputs, as Keras
            if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
                x = ops.cast(x, "float32")
            axes = [i for i in range(len(x.shape)) if i != self.axis % len(x.shape)]
            # Keras' synchronized moments use E[x²] − E[x]²; with one replica the
            # numerically stabler local moments are the same statistics.
            global_stats = self.synchronized and num_replicas() > 1
            mean, variance = ops.moments(x, axes, synchronized=global_stats)
            outputs = ops.batch_normalization(x, mean, variance, self.axis, self.beta,
                                              self.gamma, self.epsilon)
            outputs = ops.cast(outputs, self.compute_dtype)
        if not self.synchronized:  # (synchronized statistics are global already)
            mean, variance = mean_over_replicas(mean, variance)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def _fused(self, inputs, is_training=True):
        """(outputs, mean, variance): in training, the batch mean and biased batch
        variance; in inference (`is_training` False), the moving statistics used."""
        import tensorflow as tf

        x = inputs if len(inputs.shape) == 4 else inputs[:, None, None, :]
        if is_training:
            mean = variance = tf.constant([], tf.float32)
        else:
            mean, variance = self.moving_mean.value, self.moving_variance.value
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma.value, offset=self.beta.value, mean=mean, variance=variance,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=is_training)
        y = y if len(inputs.shape) == 4 else y[:, 0, 0, :]
        if not is_training:
            return y, mean, variance
        # The kernel returns the Bessel-corrected variance; Keras (and haiku) average the
        # biased one.
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        return y, mean, variance * (n - 1.0) / n


@keras.saving.register_keras_serializable(package="byol_tf")
class WSConv2D(layers.Conv2D):
    """Conv2D with a weight-standardised kernel: each output channel's kernel is
    standardised over (height, width, input channels), `(w − mean) / √(var + 1e-5)`,
    before the convolution (Qiao et al. 2019). Args as `keras.layers.Conv2D`."""

    def convolution_op(self, inputs, kernel):
        mean, var = ops.moments(kernel, axes=[0, 1, 2], keepdims=True)
        return super().convolution_op(inputs, (kernel - mean) * ops.rsqrt(var + WS_EPSILON))


@keras.saving.register_keras_serializable(package="byol_tf")
class MLP(keras.Sequential):
    """BYOL's projector / predictor: `Dense(hidden) → norm → ReLU → Dense(out, no bias)`,
    `[B, input_dim] → [B, output_dim]`.

    Args:
      hidden_dim: int. Width of the hidden layer (4096 in the paper).
      output_dim: int. Output size (256 in the paper).
      input_dim: int or None. Builds the MLP for this input size when given. Defaults to None.
      sync_batch_norm: bool. Batch-norm statistics over the global batch under a
        multi-replica strategy. Defaults to True.
      name: str or None. Layer name. Defaults to None.
      norm: "batch_norm" (the paper), "layer_norm" or "none" (the BYOL ablations).
        Defaults to "batch_norm".
    """

    def __init__(self, hidden_dim, output_dim, input_dim=None, sync_batch_norm=True, name=None,
                 norm="batch_norm", **kwargs):
        kwargs.pop("layers", None)
        super().__init__(name=name, **kwargs)
        if norm not in HEAD_NORMS:
            raise ValueError(f"MLP norm must be one of {HEAD_NORMS}; got {norm!r}")
        self.hidden_dim, self.output_dim, self.input_dim = hidden_dim, output_dim, input_dim
        self.sync_batch_norm, self.norm = sync_batch_norm, norm
        if input_dim is not None:
            self.add(keras.Input((input_dim,)))
        self.add(layers.Dense(hidden_dim, name="hidden"))
        if norm == "batch_norm":
            self.add(BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                               synchronized=sync_batch_norm, name="bn"))
        elif norm == "layer_norm":
            self.add(layers.LayerNormalization(epsilon=BN_EPSILON, name="ln"))
        self.add(layers.ReLU(name="relu"))
        self.add(layers.Dense(output_dim, use_bias=False, name="out"))

    def get_config(self):
        return {"hidden_dim": self.hidden_dim, "output_dim": self.output_dim,
                "input_dim": self.input_dim, "sync_batch_norm": self.sync_batch_norm,
                "norm": self.norm, "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

