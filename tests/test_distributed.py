"""tf.distribute: MirroredStrategy over 2 logical CPUs equals one device; XLA; bfloat16."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf

ROOT = pathlib.Path(__file__).resolve().parents[1]


def mirrored_run(tmp_path, *flags):
    out = tmp_path / "weights.npz"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, str(ROOT / "tests/helpers/mirrored_run.py"), str(out),
                             *flags], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    data = np.load(out)
    names = [k.split("::", 1)[1] for k in data.files if k.startswith("single::")]
    return data, names


def test_mirrored_strategy_with_global_batch_norm_equals_one_device(tmp_path):
    data, names = mirrored_run(tmp_path)
    assert int(data["single_steps"]) == int(data["mirrored_steps"]) == 3
    assert any(n.startswith("target_") for n in names) and any("moving" in n for n in names)
    for name in names:
        copies = data[f"mirrored::{name}"]
        assert copies.shape[0] == 2, name  # one copy a replica
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {name}")
        np.testing.assert_allclose(copies[0], data[f"single::{name}"][0], atol=1e-5, err_msg=name)
    assert float(data["mirrored_loss"]) == pytest.approx(float(data["single_loss"]), abs=1e-5)


def test_mirrored_strategy_per_replica_batch_norm_keeps_replicas_identical(tmp_path):
    data, names = mirrored_run(tmp_path, "--sync_bn=0")
    for name in names:
        copies = data[f"mirrored::{name}"]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {name}")
    # Per-replica statistics are a different computation from one device's global batch.
    gap = max(float(np.abs(data[f"mirrored::{n}"][0] - data[f"single::{n}"][0]).max()) for n in names)
    assert gap > 1e-3


@pytest.mark.parametrize("jit", [False, True])
def test_mixed_bfloat16_step(jit):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        model = byol_tf.BYOL(byol_tf.encoders.get("tiny_resnet_cifar"), projection_dim=16,
                             hidden_dim=32, total_steps=10, num_classes=10, seed=0)
        model.compile(optimizer=byol_tf.LARS(0.1), jit_compile=jit)
        x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
        logs = model.fit(tf.data.Dataset.from_tensor_slices((x, np.arange(16) % 10)).batch(8),
                         verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(logs["loss"][0]) and 0 < logs["loss"][0] < 8
    assert model.online_encoder.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in model.weights if v.trainable or "moving" in v.path)
    assert all(t.dtype == "float32" for t, _ in model.target_pairs)
