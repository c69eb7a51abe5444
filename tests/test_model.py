"""BYOL as a Keras model: input handling, bad input, saving, XLA, real CIFAR-10 training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf


from helpers.method_checks import check_method
from helpers.models import tiny_byol


def images(n=16, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


# ------------------------------------------------------------------ accepted inputs
def test_accepts_images_labels_and_premade_views():
    x, y = images(), np.arange(16) % 10
    model = tiny_byol(num_classes=10)
    logs = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), verbose=0).history
    assert {"loss", "probe_accuracy", "probe_loss", "projection_std", "tau"} <= set(logs)
    assert 0.0 <= logs["probe_accuracy"][0] <= 1.0
    assert 0.0 < logs["projection_std"][0] <= 1.0

    views = (x.astype(np.float32) / 255, x[:, ::-1].astype(np.float32) / 255)
    logs = tiny_byol().fit(tf.data.Dataset.from_tensor_slices(views).batch(8), verbose=0).history
    assert np.isfinite(logs["loss"][0]) and "probe_accuracy" not in logs
    logs = tiny_byol().fit(tf.data.Dataset.from_tensor_slices(x).batch(8), verbose=0).history
    assert np.isfinite(logs["loss"][0])


def test_lars_excludes_bias_and_batch_norm_of_the_real_model():
    model = tiny_byol(num_classes=10)
    model.optimizer.build(model.trainable_variables)
    for v in model.trainable_variables:
        excluded = model.optimizer.is_excluded(v)
        is_bias_or_norm = v.name in ("bias", "gamma", "beta")
        assert excluded == is_bias_or_norm, v.path


def test_collapse_metric():
    rng = np.random.default_rng(0)
    healthy = rng.normal(size=(4096, 64)).astype(np.float32)
    assert float(byol_tf.projection_std(healthy)) == pytest.approx(1 / np.sqrt(64), rel=0.02)
    collapsed = np.ones((256, 64), np.float32) + 1e-4 * rng.normal(size=(256, 64)).astype(np.float32)
    assert float(byol_tf.projection_std(collapsed)) < 1e-3


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("data,match", [
    (np.zeros((8, 32, 32), np.uint8), "rank 4"),
    (np.zeros((8, 32, 32, 1), np.uint8), "3 channels"),
    (np.zeros((8, 32, 32, 4), np.float32), "3 channels"),
    (np.zeros((8, 32, 32, 3), np.int32), "dtype int32"),
    (np.full((8, 32, 32, 3), 255.0, np.float32), r"must be in \[0, 1\]"),
    (np.full((8, 32, 32, 3), -0.5, np.float32), r"must be in \[0, 1\]"),
    (np.full((8, 32, 32, 3), np.nan, np.float32), "NaN"),
])
def test_bad_images_raise_value_error(data, match):
    with pytest.raises(ValueError, match=match):
        tiny_byol().fit(tf.data.Dataset.from_tensor_slices(data).batch(4), verbose=0)
    with pytest.raises(ValueError, match=match):
        tiny_byol().fit(data, batch_size=4, verbose=0)


def test_bad_values_in_a_later_batch_raise_value_error():
    good = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype(np.float32)
    bad = good.copy()
    bad[3, 0, 0, 0] = 7.0
    data = tf.data.Dataset.from_tensor_slices(np.concatenate([good, bad])).batch(8)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        tiny_byol().fit(data, verbose=0)


def test_empty_dataset_and_bad_labels():
    empty = tf.data.Dataset.from_tensor_slices(images()).take(0).batch(4)
    with pytest.raises(ValueError, match="empty"):
        tiny_byol().fit(empty, verbose=0)
    with pytest.raises(ValueError, match="labels"):
        tiny_byol(num_classes=10).fit(
            tf.data.Dataset.from_tensor_slices((images(), np.zeros((16, 10)))).batch(8), verbose=0)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="tau_base"):
        byol_tf.BYOL("tiny_resnet_cifar", tau_base=1.5)
    with pytest.raises(ValueError, match="Unknown encoder"):
        byol_tf.BYOL("resnet_unknown")
    with pytest.raises(ValueError, match="built keras.Model"):
        byol_tf.BYOL(keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(4)]))


# ------------------------------------------------------------------ saving
def test_keras_save_load_round_trip(tmp_path):
    model = tiny_byol(num_classes=10)
    loaded = check_method(model, tmp_path, batch=images(8), labels=np.arange(8) % 10)
    x = images(4, seed=1).astype(np.float32) / 255
    # The encoder alone, for downstream use.
    np.testing.assert_array_equal(loaded.online_encoder(model.converter(x)), model(x))
    # Loaded model keeps training, with target weights still off the optimizer's list.
    assert len(loaded.trainable_variables) == len(model.trainable_variables)
    loaded.fit(images(8), batch_size=8, verbose=0)


# ------------------------------------------------------------------ XLA
def test_jit_compiled_step_equals_the_plain_step():
    # TF's stateless RNG picks a different algorithm under XLA, so the two runs only
    # draw the same views with augmentation off; with it on, XLA must still compile.
    data = tf.data.Dataset.from_tensor_slices(images(32)).batch(16)
    augmented = tiny_byol(jit=True).fit(data, verbose=0).history
    assert np.isfinite(augmented["loss"][0])
    # A small SGD step: XLA and TF kernels differ by float rounding (~1e-6), which large
    # steps on a tiny batch-norm net amplify; this compares the computations, not chaos.
    runs = []
    for jit in (False, True):
        model = tiny_byol(jit=jit, augment=False)
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=jit)
        runs.append((model, model.fit(data, verbose=0).history))
    (plain, logs_plain), (xla, logs_xla) = runs
    assert xla.jit_compile and not plain.jit_compile
    assert logs_xla["loss"][0] == pytest.approx(logs_plain["loss"][0], rel=1e-5)
    for a, b in zip(plain.weights, xla.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, err_msg=a.path)


# ------------------------------------------------------------------ real data
@pytest.mark.slow  # ~105 s: every method trains on real CIFAR-10 in test_methods.py
def test_fit_on_real_cifar10_resnet18(cifar10_dir):
    import tensorflow_datasets as tfds

    steps, batch = 16, 64
    train = tfds.load("cifar10", split="train", data_dir=str(cifar10_dir / "tfds"),
                      download=False, as_supervised=True)
    train = train.shuffle(2048, seed=0).batch(batch, drop_remainder=True).take(steps)
    keras.utils.set_random_seed(0)
    model = byol_tf.BYOL(byol_tf.encoders.get("resnet18_cifar"), total_steps=steps,
                         num_classes=10, seed=0)
    model.compile(optimizer=byol_tf.LARS(2.0 * batch / 256))
    running = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: running.append(
            (float(logs["loss"]), float(logs["probe_accuracy"]), float(logs["projection_std"]))))
    model.fit(train, epochs=1, verbose=0, callbacks=[callback])
    assert len(running) == steps
    means = np.array([r[0] for r in running])
    per_step = means * np.arange(1, steps + 1) - np.concatenate([[0], means[:-1] * np.arange(1, steps)])
    assert per_step[-4:].mean() < per_step[:4].mean() - 0.3, per_step
    accuracy, spread = running[-1][1], running[-1][2]
    assert 0.0 <= accuracy <= 1.0
    assert 0.01 < spread < 1.0  # not collapsed
