"""LARS and AdamW against hand-computed steps; the warm-up + cosine learning-rate schedule."""

import keras
import numpy as np
import pytest

from byol_tf import LARS, WarmupCosine, optimizers
from byol_tf.schedules import scaled_learning_rate
from helpers.reference import np_lars as hand_lars


def test_lars_two_steps_by_hand():
    rng = np.random.default_rng(0)
    layer = keras.layers.Dense(3, name="dense")
    layer.build((None, 4))
    bn = keras.layers.BatchNormalization(name="features_bn")
    bn.build((None, 3))
    variables = [layer.kernel, layer.bias, bn.gamma, bn.beta]
    for v in variables:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    start = [v.numpy().astype(np.float64) for v in variables]
    opt = LARS(learning_rate=0.5, weight_decay=0.1)
    assert [opt.is_excluded(v) for v in variables] == [False, True, True, True]

    expected = [w.copy() for w in start]
    moms = [np.zeros_like(w) for w in start]
    for _ in range(2):
        grads = [rng.normal(size=v.shape).astype(np.float32) for v in variables]
        opt.apply(grads, variables)
        for i, g in enumerate(grads):
            expected[i], moms[i] = hand_lars(expected[i], g.astype(np.float64), moms[i], 0.5, 0.1,
                                             adapt=(i == 0))
    for v, e in zip(variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6, err_msg=v.path)


def test_lars_trust_ratio_is_one_for_zero_norms():
    w = keras.Variable(np.zeros((2, 2), np.float32), name="kernel")
    opt = LARS(learning_rate=1.0, weight_decay=0.0)
    opt.apply([np.ones((2, 2), np.float32)], [w])
    np.testing.assert_allclose(w.numpy(), -np.ones((2, 2)))  # ‖w‖ = 0 → ratio 1


def test_lars_serialises():
    opt = LARS(learning_rate=WarmupCosine(0.3, 512, 1000, 100), weight_decay=1e-6, eta=2e-3)
    clone = LARS.from_config(opt.get_config())
    assert clone.lars_weight_decay == 1e-6 and clone.eta == 2e-3 and clone.exclude == opt.exclude


@pytest.mark.parametrize("jit", [False, True])
def test_adamw_three_steps_by_hand_and_as_keras(jit):
    """byol_tf's AdamW (one learning-rate read, TensorFlow's fused Adam kernel) against the
    update written out in numpy (float64) and against Keras' AdamW, with a schedule and a
    variable excluded from weight decay, eagerly and XLA-compiled."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = [rng.normal(size=s).astype(np.float32) for s in ((4, 3), (3,))]
    grads = [[rng.normal(size=w.shape).astype(np.float32) for w in start] for _ in range(3)]
    schedule = WarmupCosine(0.05, 256, 10, 2)
    results = {}
    for name, cls in (("ours", optimizers.AdamW), ("keras", keras.optimizers.AdamW)):
        variables = [keras.Variable(w, name=n) for w, n in zip(start, ("kernel", "bias"))]
        opt = cls(schedule, weight_decay=0.1)
        opt.exclude_from_weight_decay(var_names=["bias"])
        opt.build(variables)
        # (called only within this iteration, so the loop variables are the ones meant)
        apply = tf.function(lambda g: opt.apply(g, variables), jit_compile=jit)  # noqa: B023
        for g in grads:
            apply(g)
        results[name] = [v.numpy() for v in variables]
    b1, b2, eps = 0.9, 0.999, 1e-7
    expected = [w.astype(np.float64) for w in start]
    m = [np.zeros_like(w) for w in expected]
    v = [np.zeros_like(w) for w in expected]
    for k, g in enumerate(grads, start=1):
        lr = float(schedule(k - 1))
        for i, gi in enumerate(g):
            if i == 0:  # the bias is excluded from the decay
                expected[i] = expected[i] - 0.1 * lr * expected[i]
            m[i] += (1 - b1) * (gi - m[i])
            v[i] += (1 - b2) * (gi.astype(np.float64) ** 2 - v[i])
            alpha = lr * np.sqrt(1 - b2**k) / (1 - b1**k)
            expected[i] = expected[i] - alpha * m[i] / (np.sqrt(v[i]) + eps)
    for ours, keras_, hand in zip(results["ours"], results["keras"], expected):
        assert not np.allclose(ours, start[0] if ours.ndim == 2 else start[1], atol=1e-3)
        np.testing.assert_allclose(ours, hand, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours, keras_, rtol=1e-5, atol=1e-6)


def test_adamw_serialises_and_is_the_adamw_preset():
    opt = optimizers.get("adamw", WarmupCosine(2e-3, 128, 780, 0), 1e-6)
    assert isinstance(opt, optimizers.AdamW)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(clone) is optimizers.AdamW and clone.weight_decay == pytest.approx(1e-6)


def test_warmup_cosine_schedule():
    base, batch, total, warm = 0.2, 512, 1000, 100
    schedule = WarmupCosine(base, batch, total, warm)
    peak = base * batch / 256
    assert scaled_learning_rate(base, batch) == pytest.approx(peak)
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(50)) == pytest.approx(peak * 50 / 100)
    assert float(schedule(100)) == pytest.approx(peak)
    mid = warm + (total - warm) // 2
    assert float(schedule(mid)) == pytest.approx(peak * 0.5, rel=1e-5)
    assert float(schedule(total)) == pytest.approx(0.0, abs=1e-7)
    k = 700
    assert float(schedule(k)) == pytest.approx(
        peak * 0.5 * (1 + np.cos(np.pi * (k - warm) / (total - warm))), rel=1e-5)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    assert float(restored(k)) == pytest.approx(float(schedule(k)))
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(0.2, 256, 10, 10)
