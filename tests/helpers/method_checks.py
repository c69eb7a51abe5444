"""The checks every self-supervised method passes (keras-hub's `run_task_test` and
`run_model_saving_test`, for a `TwoViewModel`): one training step, the config round trip,
the `.keras` round trip of the whole model and of its `image_encoder()`."""

import keras
import numpy as np

import byol_tf


def images(n=8, seed=0, height=40, width=36):
    """`n` random uint8 RGB images [n, height, width, 3] (any size: the converter resizes)."""
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def check_method(model, tmp_path, batch=None, labels=None):
    """Runs the shared checks on `model` (compiled with LARS(0.1) when it is not) and returns
    the model reloaded from `.keras` after one step, for the caller's own checks.

    - a step on `batch` (default: 8 uint8 images; `labels` for the probe) gives a finite loss and moves the online encoder;
    - `from_config(get_config())` gives the same config and, with the weights, the same
      embeddings;
    - the `.keras` file restores the same class, config, every weight (targets, queues and
      the optimizer's step included) and the same embeddings;
    - `image_encoder()` saved alone and reloaded gives the model's embeddings.
    """
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=byol_tf.LARS(0.1))
    batch = images() if batch is None else batch
    x = images(2, seed=1)
    online = model.online_encoder
    before = [w.numpy().copy() for w in online.trainable_weights]
    logs = model.train_on_batch(batch, labels, return_dict=True)
    assert np.isfinite(logs["loss"]), logs
    moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, online.trainable_weights)]
    assert any(moved), "one step left the online encoder unchanged"

    config = model.get_config()
    rebuilt = type(model).from_config(config)
    assert rebuilt.get_config() == config
    rebuilt(x)  # (builds it, so that every weight exists)
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(rebuilt(x), model(x), atol=1e-6)

    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert type(restored) is type(model) and restored.get_config() == config
    assert len(restored.weights) == len(model.weights)
    for a, b in zip(restored.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 1
    np.testing.assert_allclose(restored(x), model(x), atol=1e-6)

    model.image_encoder().save(tmp_path / "image_encoder.keras")
    image_encoder = keras.models.load_model(tmp_path / "image_encoder.keras")
    assert isinstance(image_encoder, byol_tf.ImageEncoder)
    np.testing.assert_allclose(image_encoder(x), model(x), atol=1e-6)
    return restored
