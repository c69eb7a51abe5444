"""The train and test steps of `byol_tf.TwoViewModel`, one module per backend (as Keras
keeps its trainers). Both run the model's own `make_views`, `target_forward`,
`loss_and_logs`, optimizer `apply`, `after_update` and `update_metrics`."""

import importlib

import keras

_MODULES = {"tensorflow": "byol_tf.steps.tensorflow_step", "jax": "byol_tf.steps.jax_step"}


def for_backend():
    """The step module of the current Keras backend."""
    backend = keras.backend.backend()
    if backend not in _MODULES:
        raise NotImplementedError(f"byol_tf's train steps support the tensorflow and jax "
                                  f"backends; got {backend}")
    return importlib.import_module(_MODULES[backend])
