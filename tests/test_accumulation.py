"""Gradient accumulation (`--accumulation_steps`, `optimizers.get(…, accumulation_steps=N)`):
N micro-batches of B are one optimizer step on a batch of N·B with batch norm per
micro-batch — checked against a hand-written loop (one gradient per micro-batch, their mean
applied once, the target moved once) — the target and the LR/τ schedules count optimizer
steps, and a model saved between two micro-batches resumes exactly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf
from helpers.commands import train

N, MICRO = 2, 8  # micro-batches per optimizer step, images in each


def views(count, seed=0):
    """`count` micro-batches of pre-made (view1, view2) float views in [0, 1]."""
    rng = np.random.default_rng(seed)
    return [tuple(rng.uniform(0, 1, (MICRO, 16, 16, 3)).astype("float32") for _ in range(2))
            for _ in range(count)]


def model(accumulation_steps):
    """A tiny BYOL (premade views: no augmentation), SGD with a decaying schedule."""
    keras.utils.set_random_seed(0)
    m = byol_tf.BYOL("tiny_resnet_cifar", projection_dim=16, hidden_dim=32, total_steps=4,
                     augment=False, tau_base=0.9, seed=0)
    schedule = byol_tf.WarmupCosine(0.5, N * MICRO, total_steps=4, warmup_steps=0)
    m.compile(optimizer=byol_tf.optimizers.get("sgd", schedule, 0.0, accumulation_steps))
    return m


def fit(m, batches):
    for v1, v2 in batches:  # one fit step per micro-batch, in order
        m.fit(tf.data.Dataset.from_tensors((v1, v2)), epochs=1, verbose=0, shuffle=False)


def reference_step(m, batches):
    """One optimizer step by hand: per micro-batch, the target's forward (its batch-norm
    statistics move) and the gradient of the online loss (batch norm on that micro-batch);
    the mean gradient applied once; then τ's EMA once, at the optimizer's step."""
    variables = m.trainable_variables
    total = [tf.zeros_like(v) for v in variables]
    for v1, v2 in batches:
        targets = m.target_forward(tf.constant(v1), tf.constant(v2))
        with tf.GradientTape() as tape:
            loss, _ = m.loss_and_logs(tf.constant(v1), tf.constant(v2), targets)
        total = [t + g for t, g in zip(total, tape.gradient(loss, variables))]
    scalars = m.step_scalars(m.optimizer.iterations)
    m.optimizer.apply([t / len(batches) for t in total], variables)
    m.after_update(None, scalars)


def test_micro_batches_equal_one_step_on_their_union_with_batch_norm_per_micro_batch():
    batches = views(2 * N)
    accumulated, by_hand = model(N), model(1)
    online = [v.numpy() for v in accumulated.online_encoder.trainable_weights]
    target = [v.numpy() for v in accumulated.target_encoder.trainable_weights]
    fit(accumulated, batches[:1])  # half an optimizer step: nothing but statistics moves
    assert int(accumulated.optimizer.iterations) == 0
    for before, v in zip(online, accumulated.online_encoder.trainable_weights):
        np.testing.assert_array_equal(before, v.numpy())
    for before, v in zip(target, accumulated.target_encoder.trainable_weights):
        np.testing.assert_array_equal(before, v.numpy())
    fit(accumulated, batches[1:])
    reference_step(by_hand, batches[:N])
    reference_step(by_hand, batches[N:])
    assert int(accumulated.optimizer.iterations) == 2 == int(by_hand.optimizer.iterations)
    for got, want in zip(accumulated.weights, by_hand.weights):
        if "seed" in got.path:
            continue
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-5, atol=2e-6,
                                   err_msg=got.path)
    # The LR of step 2 of 4 (cosine) and τ_2, not of batch 4.
    assert float(accumulated.optimizer.learning_rate) == pytest.approx(
        float(byol_tf.WarmupCosine(0.5, N * MICRO, 4, 0)(2)))
    assert float(accumulated.tau(accumulated.optimizer.iterations)) == pytest.approx(
        1 - 0.1 * (np.cos(np.pi * 2 / 4) + 1) / 2)


def test_a_model_saved_between_micro_batches_resumes_exactly(tmp_path):
    batches = views(2 * N + 1, seed=1)
    whole = model(N)
    fit(whole, batches)
    first = model(N)
    fit(first, batches[:N + 1])  # one optimizer step and one micro-batch of the next
    first.save_weights(tmp_path / "half.weights.h5")
    resumed = model(N)
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(tmp_path / "half.weights.h5")
    fit(resumed, batches[N + 1:])
    for got, want in zip(resumed.weights, whole.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.path)
    for got, want in zip(resumed.optimizer.variables, whole.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)


def test_train_py_trains_in_optimizer_steps_of_micro_batches(tmp_path):
    run_dir = tmp_path / "run"
    result = train("--accumulation_steps=2", "--batch_size=32", "--epochs=2",
                   "--steps_per_epoch=2", "--hidden_dim=32", "--projection_dim=16", "--noknn",
                   f"--final_weights_npz={tmp_path / 'w.npz'}", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Training from step 0 of 8 (2 micro-batches of 16 per optimizer step)" in result.stdout
    assert int(np.load(tmp_path / "w.npz")["step"]) == 8  # batches
    saved = keras.models.load_model(run_dir / "byol.keras")
    assert int(saved.optimizer.iterations) == 4  # optimizer steps: the schedules' count
    assert saved.optimizer.gradient_accumulation_steps == 2
    assert float(saved.optimizer.learning_rate) == pytest.approx(0.0, abs=1e-12)  # cosine's end
    assert len((run_dir / "history.csv").read_text().splitlines()) == 1 + 2
