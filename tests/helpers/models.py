"""Small models shared by the tests."""

import keras

import byol_tf


def tiny_byol(jit=False, learning_rate=0.1, **kwargs):
    """A compiled BYOL around the tiny CIFAR ResNet: projection 16, hidden 32, 20 steps,
    seed 0, LARS(learning_rate); keyword arguments override the constructor's."""
    keras.utils.set_random_seed(0)
    defaults = dict(projection_dim=16, hidden_dim=32, total_steps=20, seed=0)
    model = byol_tf.BYOL(byol_tf.encoders.get("tiny_resnet_cifar"), **{**defaults, **kwargs})
    model.compile(optimizer=byol_tf.LARS(learning_rate), jit_compile=jit)
    return model


def config_stand_in(**record):
    """A stand-in for a `RunConfig` holding `record`, for `RunFolder` alone."""
    import types

    return types.SimpleNamespace(
        record=lambda: dict(record),
        differences=lambda recorded: sorted(k for k in set(record) | set(recorded)
                                            if record.get(k) != recorded.get(k)))
