"""The other methods on the shared machinery: every method and BYOL ablation trains with
model.fit on real CIFAR-10; the MoCo queue (size, FIFO ring, no own-batch negatives,
save/restore); `.keras` round trips; BYOL switches do what they say."""

import keras
import numpy as np
import pytest

import byol_tf
from byol_tf import losses
from helpers.method_checks import check_method

SMALL = dict(projection_dim=16, hidden_dim=32, seed=0)
METHODS = {
    "byol": lambda: byol_tf.BYOL("tiny_resnet_cifar", total_steps=8, num_classes=10, **SMALL),
    "byol_beta": lambda: byol_tf.BYOL("tiny_resnet_cifar", total_steps=8, beta=0.5, num_classes=10,
                                      **SMALL),
    "byol_no_predictor": lambda: byol_tf.BYOL("tiny_resnet_cifar", use_predictor=False,
                                              num_classes=10, **SMALL),
    "byol_layer_norm": lambda: byol_tf.BYOL("tiny_resnet_cifar", projector_norm="layer_norm",
                                            predictor_norm="none", num_classes=10, **SMALL),
    "byol_gnws": lambda: byol_tf.BYOL("tiny_resnet_cifar_gnws", num_classes=10, **SMALL),
    "simclr": lambda: byol_tf.SimCLR("tiny_resnet_cifar", temperature=0.5, num_classes=10, **SMALL),
    "moco": lambda: byol_tf.MoCo("tiny_resnet_cifar", queue_size=128, num_classes=10, **SMALL),
    "multiview": lambda: byol_tf.MultiView("tiny_resnet_cifar", num_classes=10, **SMALL),
}


@pytest.fixture(scope="module")
def cifar_subset(cifar10_dir):
    from byol_tf import data

    x, y, _, _ = data.load_arrays("cifar10", str(cifar10_dir / "tfds"), max_train=256, max_test=1)
    return x, y.astype(np.int32)


# The BYOL variants train with `-m slow`; BYOL and the other methods in the default suite.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith("byol_")
                                  else n for n in sorted(METHODS)])
def test_method_trains_on_real_cifar10(name, cifar_subset):
    x, y = cifar_subset
    keras.utils.set_random_seed(0)
    model = METHODS[name]()
    model.compile(optimizer=byol_tf.LARS(0.3, weight_decay=1e-5))
    before = [w.numpy().copy() for w in model.online_encoder.trainable_weights]
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all(), history
    assert np.isfinite(history["probe_loss"]).all()
    moved = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.online_encoder.trainable_weights)]
    assert all(moved), "every encoder weight must move"
    features = model(x[:8])
    assert features.shape == (8, model.representation_dim)


def _views(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.uniform(size=(n, 16, 16, 3)).astype(np.float32),
            rng.uniform(size=(n, 16, 16, 3)).astype(np.float32))


def _moco(queue_size=8):
    keras.utils.set_random_seed(0)
    encoder = byol_tf.encoders.ResNet(depth=10, stem="cifar", base_width=8, input_shape=(16, 16, 3))
    model = byol_tf.MoCo(encoder, projection_dim=4, hidden_dim=16, queue_size=queue_size,
                         momentum=0.9, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    return model


def test_moco_queue_is_a_fifo_ring_of_past_keys_never_the_own_batch():
    model = _moco(queue_size=8)  # two batches of 4
    assert tuple(model.queue.shape) == (8, 4) and int(model.queue_pointer.numpy()) == 0
    np.testing.assert_allclose(np.linalg.norm(model.queue.numpy(), axis=1), 1.0, rtol=1e-5)
    written = {}
    for step in range(3):
        v1, v2 = _views(4, step)
        queue_before = model.queue.numpy().copy()
        keys = np.asarray(model.target_forward(v1, v2))  # the momentum networks before the step
        query = np.asarray(model.head(model.online_encoder(model.converter(v1), training=True),
                                      training=True))
        expected = float(losses.moco_infonce(query, keys, queue_before, model.temperature))
        with_own = float(losses.moco_infonce(query, keys, np.concatenate([keys, queue_before[4:]]),
                                             model.temperature))
        logs = model.train_on_batch((v1, v2), return_dict=True)
        assert logs["loss"] == pytest.approx(expected, rel=1e-4)  # negatives = the queue before
        # ... and not a queue holding the batch's own keys (the test can tell them apart):
        assert abs(logs["loss"] - with_own) > 10 * abs(logs["loss"] - expected)
        rows = slice((4 * step) % 8, (4 * step) % 8 + 4)
        np.testing.assert_allclose(model.queue.numpy()[rows], keys, atol=1e-5)
        written[step] = rows
        others = np.ones(8, bool)
        others[rows] = False
        np.testing.assert_array_equal(model.queue.numpy()[others], queue_before[others])
        assert int(model.queue_pointer.numpy()) == (4 * (step + 1)) % 8
    assert written[2] == written[0]  # the third batch replaced the oldest keys


def test_moco_queue_size_must_divide_by_the_batch():
    model = _moco(queue_size=6)
    with pytest.raises(ValueError, match="multiple of the global batch size 4"):
        model.train_on_batch(_views(4, 0))


def test_moco_save_restore_round_trip(tmp_path):
    model = _moco(queue_size=8)
    restored = check_method(model, tmp_path, batch=_views(4, 0))
    np.testing.assert_array_equal(restored.queue.numpy(), model.queue.numpy())
    assert int(restored.queue_pointer.numpy()) == int(model.queue_pointer.numpy()) == 4


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_passes_the_shared_checks(name, tmp_path):
    """Every method and BYOL variant: a step, the config round trip, the `.keras` round trip
    of the whole model (every weight) and of its `ImageEncoder` (helpers.method_checks)."""
    keras.utils.set_random_seed(0)
    check_method(METHODS[name](), tmp_path)


def test_byol_tau_extremes_and_no_predictor():
    x = np.random.default_rng(0).uniform(size=(8, 32, 32, 3)).astype(np.float32)
    for tau, expect in ((0.0, "online"), (1.0, "initial")):
        keras.utils.set_random_seed(0)
        model = byol_tf.BYOL("tiny_resnet_cifar", tau_base=tau, tau_schedule="constant",
                             augment=False, **SMALL)
        model.compile(optimizer=byol_tf.LARS(0.5))
        start = [t.numpy().copy() for t, _ in model.target_pairs()]
        model.fit(x, batch_size=8, epochs=2, verbose=0)
        for (target, online), initial in zip(model.target_pairs(), start):
            reference = online.numpy() if expect == "online" else initial
            np.testing.assert_allclose(target.numpy(), reference, atol=1e-6)
        assert float(model.tau(5)) == tau
    model = byol_tf.BYOL("tiny_resnet_cifar", use_predictor=False, **SMALL)
    assert model.online_predictor is None
    assert not any("predictor" in v.path for v in model.trainable_variables)
    with pytest.raises(ValueError, match="norm must be one of"):
        byol_tf.BYOL("tiny_resnet_cifar", projector_norm="group", **SMALL)
