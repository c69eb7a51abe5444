"""The fused BatchNorm equals Keras' BatchNormalization: outputs, gradients, statistics;
the weight-standardised conv equals its formula."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_tf.layers import BatchNorm, WSConv2D


@pytest.mark.parametrize("shape", [(16, 5, 5, 7), (32, 9)])
def test_fused_batch_norm_matches_keras(shape):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
    ours = BatchNorm(momentum=0.9, epsilon=1e-5)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours.build(shape), ref.build(shape)
    for a, b in zip(ours.weights, ref.weights):
        value = rng.normal(size=a.shape).astype(np.float32)
        a.assign(np.abs(value) if "variance" in a.path else value)
        b.assign(a.numpy())
    assert ours._can_fuse(x, True, None)
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    results = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([y] + grads + [layer.moving_mean, layer.moving_variance])
    for a, b in zip(*results):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(ours(x, training=False)), np.asarray(ref(x, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_moving_statistics_by_hand():
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (8, 3, 3, 4)).astype(np.float32)
    layer = BatchNorm(momentum=0.9, epsilon=1e-5)
    layer.build(x.shape)
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(),
                               0.9 + 0.1 * x.var(axis=(0, 1, 2)), rtol=1e-5)
    # Inference mode normalises with them (by hand), on the fused kernel too.
    assert layer._can_fuse(x, False, None)
    want = ((x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + 1e-5)
            * layer.gamma.numpy() + layer.beta.numpy())
    np.testing.assert_allclose(np.asarray(layer(x, training=False)), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,dtype,frozen", [
    ((16, 5, 5, 7), "float32", False), ((32, 9), "float32", False),
    ((16, 5, 5, 7), "float32", True), ((16, 5, 5, 7), "mixed_bfloat16", False)])
def test_fused_inference_matches_keras(shape, dtype, frozen):
    """Inference mode (training=False, or a layer frozen with trainable=False, which Keras
    runs in inference mode even when training): outputs and the gradients that fine-tuning
    through a frozen batch norm needs (inputs, gamma, beta) equal Keras' layer; the moving
    statistics stay untouched."""
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
    ours = BatchNorm(epsilon=1e-5, dtype=dtype)
    ref = keras.layers.BatchNormalization(epsilon=1e-5, dtype=dtype)
    ours.build(shape), ref.build(shape)
    for a, b in zip(ours.weights, ref.weights):
        value = rng.normal(size=a.shape).astype(np.float32)
        a.assign(np.abs(value) + 0.5 if "variance" in a.path else value)
        b.assign(a.numpy())
    compute = tf.bfloat16 if dtype == "mixed_bfloat16" else tf.float32
    x = tf.cast(x, compute)
    upstream = tf.cast(tf.constant(rng.normal(size=shape).astype(np.float32)), compute)
    training = frozen  # a frozen layer in a training call
    assert ours._can_fuse(x, training, None)
    results = []
    for layer in (ours, ref):
        layer.trainable = not frozen
        with tf.GradientTape() as tape:
            tape.watch([x, layer.gamma.value, layer.beta.value])
            y = layer(x, training=training)
            loss = tf.reduce_sum(tf.cast(y * upstream, tf.float32))
        grads = tape.gradient(loss, [x, layer.gamma.value, layer.beta.value])
        assert y.dtype == compute
        results.append([y, *grads, layer.moving_mean, layer.moving_variance])
    tolerance = 2e-2 if dtype == "mixed_bfloat16" else 1e-5
    for a, b in zip(*results):
        a, b = np.asarray(tf.cast(a, tf.float32)), np.asarray(tf.cast(b, tf.float32))
        np.testing.assert_allclose(a, b, atol=tolerance * np.abs(b).max())
    np.testing.assert_array_equal(ours.moving_mean.numpy(), ref.moving_mean.numpy())


def test_xla_uses_the_composite_path_and_matches_keras():
    """Under jit_compile the layer must not use the fused kernel (XLA's gradient of it is
    off); outputs and gradients then equal Keras' layer."""
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(8, 4, 4, 6)).astype(np.float32))
    ours, ref = BatchNorm(), keras.layers.BatchNormalization()
    ours.build(x.shape), ref.build(x.shape)
    fused_seen = []

    def step(layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.sin(y))
        if layer is ours:
            # Plain Python: the decision is made while tracing, not inside the graph.
            can_fuse = tf.autograph.experimental.do_not_convert(layer._can_fuse)
            fused_seen.append(can_fuse(x, True, None))
        return tape.gradient(loss, x)

    got = tf.function(lambda: step(ours), jit_compile=True)()
    want = tf.function(lambda: step(ref))()
    assert fused_seen == [False]
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_fused_batch_norm_in_bfloat16_matches_keras():
    """Under mixed_bfloat16 the fused kernel takes the bfloat16 activations (statistics in
    float32): outputs, gradients and moving statistics as Keras' layer, to bfloat16's
    rounding."""
    rng = np.random.default_rng(3)
    shape = (32, 6, 6, 8)
    x = tf.constant(rng.normal(1.0, 2.0, shape).astype(np.float32), tf.bfloat16)
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32), tf.bfloat16)
    ours = BatchNorm(momentum=0.9, dtype="mixed_bfloat16")
    ref = keras.layers.BatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    ours.build(shape), ref.build(shape)
    assert ours._can_fuse(x, True, None)
    results = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y * upstream, tf.float32))
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        assert y.dtype == tf.bfloat16 and grads[0].dtype == tf.bfloat16
        results.append([y, *grads, layer.moving_mean, layer.moving_variance])
    for a, b in zip(*results):
        a, b = np.asarray(tf.cast(a, tf.float32)), np.asarray(tf.cast(b, tf.float32))
        scale = np.abs(b).max()
        np.testing.assert_allclose(a, b, atol=2e-2 * scale)


def test_weight_standardised_conv_matches_numpy():
    """WSConv2D = a plain conv whose kernel numpy standardised per output channel over
    (height, width, input channels), (w − mean) / √(var + 1e-5) (Qiao et al. 2019); so its
    output ignores a per-channel scale and shift of the kernel."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 6, 3)).astype(np.float32)
    kernel = (0.3 * rng.normal(size=(3, 3, 3, 4)) + rng.normal(size=4)).astype(np.float32)
    flat = kernel.reshape(-1, 4).astype(np.float64)
    standardised = ((flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-5)).reshape(kernel.shape)
    plain = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    plain.build(x.shape)
    plain.kernel.assign(standardised.astype(np.float32))
    expected = keras.ops.convert_to_numpy(plain(x))

    ws = WSConv2D(4, 3, padding="same", use_bias=False)
    ws.build(x.shape)
    ws.kernel.assign(kernel)
    np.testing.assert_allclose(ws(x), expected, rtol=1e-4, atol=1e-4)
    raw = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)
    raw.build(x.shape)
    raw.kernel.assign(kernel)
    assert not np.allclose(raw(x), expected, atol=1e-2)  # the standardisation matters here
    ws.kernel.assign(5.0 * kernel + np.arange(4, dtype=np.float32))
    np.testing.assert_allclose(ws(x), expected, rtol=1e-3, atol=1e-3)
