"""One BYOL step against an independent float64 numpy computation of the loss, the
gradient (central differences), the SGD update, the EMA target update and τ."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf
from byol_tf.preprocessing import IMAGENET_MEAN, IMAGENET_STD
from helpers.reference import np_lars

B, S, D, HIDDEN, PROJ = 8, 4, 6, 8, 4
LR, TAU_BASE, K = 0.05, 0.9, 10


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([keras.Input((S, S, 3)), keras.layers.Flatten(),
                                keras.layers.Dense(D, name="enc_dense")], name="tiny_encoder")
    model = byol_tf.BYOL(encoder, projection_dim=PROJ, hidden_dim=HIDDEN, tau_base=TAU_BASE,
                         total_steps=K, augment=False)
    model.compile(optimizer=keras.optimizers.SGD(LR, momentum=0.0))
    return model


def mlp_params(mlp):
    hidden, bn, out = mlp.get_layer("hidden"), mlp.get_layer("bn"), mlp.get_layer("out")
    return dict(k1=hidden.kernel, b1=hidden.bias, gamma=bn.gamma, beta=bn.beta, k2=out.kernel)


def online_params(model):
    enc = model.online_encoder.get_layer("enc_dense")
    params = {"enc/k": enc.kernel, "enc/b": enc.bias}
    for prefix, mlp in (("proj", model.online_projector), ("pred", model.online_predictor)):
        params.update({f"{prefix}/{k}": v for k, v in mlp_params(mlp).items()})
    return params


def target_params(model):
    enc = model.target_encoder.get_layer("enc_dense")
    params = {"enc/k": enc.kernel, "enc/b": enc.bias}
    params.update({f"proj/{k}": v for k, v in mlp_params(model.target_projector).items()})
    return params


def numpy_values(params):
    return {k: np.array(v.numpy(), dtype=np.float64) for k, v in params.items()}


def np_mlp(x, p, prefix):
    a = x @ p[f"{prefix}/k1"] + p[f"{prefix}/b1"]
    a = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5) * p[f"{prefix}/gamma"] + p[f"{prefix}/beta"]
    return np.maximum(a, 0) @ p[f"{prefix}/k2"]


def np_encode(x, p):
    x = (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return x.reshape(len(x), -1) @ p["enc/k"] + p["enc/b"]


def np_loss(online, target, v1, v2):
    def cos(a, b):
        return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    def q(v):
        return np_mlp(np_mlp(np_encode(v, online), online, "proj"), online, "pred")

    def z_target(v):
        return np_mlp(np_encode(v, target), target, "proj")

    return np.mean(2 - 2 * cos(q(v1), z_target(v2))) + np.mean(2 - 2 * cos(q(v2), z_target(v1)))


def np_grad(online, target, v1, v2, eps=1e-6):
    grads = {}
    for name, value in online.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = dict(online), dict(online)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            g[idx] = (np_loss(plus, target, v1, v2) - np_loss(minus, target, v1, v2)) / (2 * eps)
        grads[name] = g
    return grads


def tau_formula(k):
    return 1 - (1 - TAU_BASE) * (np.cos(np.pi * k / K) + 1) / 2


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(size=(B, S, S, 3)).astype(np.float32)


@pytest.mark.parametrize("k", [0, K // 2, K])
def test_one_step_matches_independent_computation(images, k):
    model = tiny_model()
    # Make the target differ from the online network so the EMA is visible.
    rng = np.random.default_rng(2)
    for t, _ in model.target_pairs():
        t.assign(t.numpy() + rng.normal(0, 0.1, t.shape).astype(np.float32))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(k)

    online0, target0 = numpy_values(online_params(model)), numpy_values(target_params(model))
    x64 = images.astype(np.float64)
    expected_loss = np_loss(online0, target0, x64, x64)
    expected_grad = np_grad(online0, target0, x64, x64)

    # The gradient TF takes, for the exactness check of the update rule.
    with tf.GradientTape() as tape:
        loss, _ = model.loss_and_logs(images, images, model.target_forward(images, images))
    tf_grads = dict(zip(online_params(model), tape.gradient(loss, list(online_params(model).values()))))
    target_bn_mean0 = model.target_projector.get_layer("bn").moving_mean.numpy()

    history = model.fit(images, batch_size=B, epochs=1, shuffle=False, verbose=0)

    assert history.history["loss"][0] == pytest.approx(expected_loss, rel=1e-5)
    online1 = numpy_values(online_params(model))
    for name in online0:
        moved = online1[name] - online0[name]
        np.testing.assert_allclose(moved, -LR * tf_grads[name].numpy(), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(moved, -LR * expected_grad[name], atol=2e-5, rtol=1e-3,
                                   err_msg=name)

    tau = tau_formula(k)
    assert history.history["tau"][0] == pytest.approx(tau, abs=1e-6)
    target1 = numpy_values(target_params(model))
    for name in target0:
        np.testing.assert_allclose(target1[name], tau * target0[name] + (1 - tau) * online1[name],
                                   atol=1e-6, err_msg=name)

    # The target's batch norm updated its own moving mean from its own batches (momentum
    # 0.9), once per view: both views are this batch, so twice.
    h = np_encode(x64, target0)
    a = h @ target0["proj/k1"] + target0["proj/b1"]
    np.testing.assert_allclose(model.target_projector.get_layer("bn").moving_mean.numpy(),
                               0.81 * target_bn_mean0 + 0.19 * a.mean(0), atol=1e-5)


def test_target_network_structure():
    model = tiny_model()
    trainable = {id(v) for v in model.trainable_variables}
    target_vars = model.target_encoder.weights + model.target_projector.weights
    assert target_vars and not any(id(v) in trainable for v in target_vars), \
        "target weights must get no gradient"
    assert not hasattr(model, "target_predictor")
    # Every target weight has an online twin in encoder/projector, none in the predictor.
    assert len(model.target_pairs()) == len(model.online_encoder.trainable_weights) + \
        len(model.online_projector.trainable_weights)
    predictor_ids = {id(v) for v in model.online_predictor.weights}
    assert not any(id(o) in predictor_ids for _, o in model.target_pairs())
    # Initialised as a copy.
    for t, o in model.target_pairs():
        np.testing.assert_array_equal(t.numpy(), o.numpy())


def test_tau_schedule_values():
    from byol_tf.schedules import target_ema
    assert float(target_ema(0, 0.996, 1000)) == pytest.approx(0.996)
    assert float(target_ema(500, 0.996, 1000)) == pytest.approx(0.998)
    assert float(target_ema(1000, 0.996, 1000)) == pytest.approx(1.0)
    assert float(target_ema(5000, 0.996, 1000)) == pytest.approx(1.0)


@pytest.fixture
def float64_keras():
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx(previous[0])
    keras.config.set_dtype_policy(previous[1])


@pytest.mark.parametrize("k", [1, 7])
def test_float64_lars_and_ema_step_equals_the_official_rule(images, float64_keras, k):
    """A float64 step (LARS with warm-up + cosine LR, cosine τ) equals the official update
    computed in numpy float64 from the same gradient, to 1e-12 relative: momentum exactly
    0.9, the given weight decay, a float64 learning rate and τ."""
    base_lr, batch, warmup, weight_decay = 0.3, B, 3, 1.5e-6
    keras.utils.set_random_seed(0)
    encoder = keras.Sequential([keras.Input((S, S, 3)), keras.layers.Flatten(),
                                keras.layers.Dense(D, name="enc_dense")], name="tiny_encoder")
    model = byol_tf.BYOL(encoder, projection_dim=PROJ, hidden_dim=HIDDEN, tau_base=TAU_BASE,
                         total_steps=K, augment=False)
    schedule = byol_tf.WarmupCosine(base_lr, batch, K, warmup)
    model.compile(optimizer=byol_tf.LARS(schedule, weight_decay=weight_decay))
    rng = np.random.default_rng(3)
    for t, _ in model.target_pairs():
        t.assign(t.numpy() + rng.normal(0, 0.1, t.shape))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(k)
    momentum0 = [rng.normal(0, 0.01, v.shape) for v in model.trainable_variables]
    for slot, value in zip(model.optimizer.momentums, momentum0):
        slot.assign(value)
    x = images.astype(np.float64)

    variables = model.trainable_variables
    assert all(v.dtype == "float64" for v in variables)
    online0 = [v.numpy().copy() for v in variables]
    target0 = [t.numpy().copy() for t, _ in model.target_pairs()]
    with tf.GradientTape() as tape:
        loss, _ = model.loss_and_logs(x, x, model.target_forward(x, x))
    grads = [g.numpy() for g in tape.gradient(loss, variables)]
    model.fit(x, batch_size=B, epochs=1, shuffle=False, verbose=0)

    peak = base_lr * batch / 256
    lr = peak * k / warmup if k < warmup else \
        peak * 0.5 * (1 + np.cos(np.pi * (k - warmup) / (K - warmup)))
    tau = 1 - (1 - TAU_BASE) * (np.cos(np.pi * k / K) + 1) / 2
    expected = {}
    for v, w, g, m in zip(variables, online0, grads, momentum0):
        adapt = v.path.endswith("kernel")  # biases and batch-norm scales/offsets are excluded
        expected[v.path], _ = np_lars(w, g, m, lr, weight_decay, adapt)
        np.testing.assert_allclose(v.numpy(), expected[v.path], rtol=1e-12, atol=0, err_msg=v.path)
    by_id = {id(v): e for v, e in zip(variables, expected.values())}
    for (t, o), t0 in zip(model.target_pairs(), target0):
        np.testing.assert_allclose(t.numpy(), tau * t0 + (1 - tau) * by_id[id(o)], rtol=1e-12,
                                   atol=1e-15, err_msg=t.path)
