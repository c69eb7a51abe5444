"""`BatchNorm`: Keras BatchNormalization with TensorFlow's fused kernel in training mode.

Same variables, config, moving-statistics rule (biased batch variance, `momentum`) and
results as `keras.layers.BatchNormalization`; on the TensorFlow backend, in training
mode, for float32 channels-last inputs without mask, renorm or synchronisation, it runs
`FusedBatchNormV3` (oneDNN on CPU), which makes a ResNet-18 forward + backward ~25%
faster here (bench/README.md). Everything else goes through the Keras implementation,
so the JAX backend, `synchronized=True` and mixed precision behave exactly as Keras.

Not under XLA (`jit_compile=True`, TPUs): XLA's lowering of the fused kernel's gradient
differs from the exact one (7.7e-3 on a conv kernel gradient of a 4×4-pixel layer at batch 8,
where the TF kernel and Keras agree to 1e-5), and XLA fuses the composite ops anyway.
"""

import keras


@keras.saving.register_keras_serializable(package="byol_tf")
class BatchNorm(keras.layers.BatchNormalization):
    def _can_fuse(self, inputs, training, mask):
        return (training and self.trainable and not _in_xla_context() and mask is None and not self.renorm
                and not self.synchronized and self.scale and self.center
                and keras.backend.backend() == "tensorflow"
                and self.axis in (-1, len(inputs.shape) - 1)
                and len(inputs.shape) in (2, 4)
                and keras.backend.standardize_dtype(inputs.dtype) == "float32")

    def call(self, inputs, training=None, mask=None):
        if not self._can_fuse(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = inputs if len(inputs.shape) == 4 else inputs[:, None, None, :]
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma.value, offset=self.beta.value,
            mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)
        # The kernel returns the Bessel-corrected variance; Keras (and haiku) average the
        # biased one.
        n = tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)
        variance = variance * (n - 1.0) / n
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y if len(inputs.shape) == 4 else y[:, 0, 0, :]


def _in_xla_context():
    """True while tracing a `jit_compile=True` function (TF backend)."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
