"""What the process runs on: accelerators and TensorFlow's CPU kernels (reads, changes nothing).

Choosing the kernels happens before TensorFlow loads, so it is not here: see
`byol_tf_runtime.use_onednn()`.
"""

import keras

from byol_tf import compat


def accelerator_present():
    """Whether the Keras backend sees a GPU or TPU (TensorFlow lists its devices, once)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process."""
    return keras.backend.backend() == "tensorflow" and compat.onednn_enabled()
