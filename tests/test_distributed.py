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


def _max_gap(data, names):
    return max(float(np.abs(data[f"mirrored::{n}"][0] - data[f"single::{n}"][0]).max()) for n in names)


def test_mirrored_strategy_with_global_batch_norm_equals_one_device(tmp_path):
    """float64 (rounding out of the way): 2 replicas of 8 = one device with 16 on every
    variable — online and target weights, BN statistics, probe — to 1e-9 (measured 6e-15)."""
    data, names = mirrored_run(tmp_path, "--float64")
    assert int(data["single_steps"]) == int(data["mirrored_steps"]) == 3
    assert any(":target_" in n for n in names) and any("moving" in n for n in names)
    for name in names:
        copies = data[f"mirrored::{name}"]
        assert copies.shape[0] == 2, name  # one copy a replica
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {name}")
        np.testing.assert_allclose(copies[0], data[f"single::{name}"][0], atol=1e-9, err_msg=name)
    assert float(data["mirrored_loss"]) == pytest.approx(float(data["single_loss"]), abs=1e-9)


@pytest.mark.slow  # ~25 s
def test_mirrored_strategy_with_fused_adamw_equals_one_device(tmp_path):
    """byol_tf's AdamW (TensorFlow's fused Adam kernel on each replica's copy of the moments)
    under MirroredStrategy: 2 replicas of 8 = one device with 16, to 1e-9 (float64)."""
    data, names = mirrored_run(tmp_path, "--float64", "--optimizer=adamw")
    assert int(data["mirrored_steps"]) == 3
    for name in names:
        copies = data[f"mirrored::{name}"]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {name}")
        np.testing.assert_allclose(copies[0], data[f"single::{name}"][0], atol=1e-9, err_msg=name)


@pytest.mark.slow  # ~30 s; the float64 comparison stays in the default suite
def test_mirrored_strategy_float32(tmp_path):
    """float32: replicas stay bit-identical and the loss matches; the weights differ from one
    device's only by float32 rounding, which the nearly cancelling gradients of batch-norm
    scales and offsets amplify (measured 2.6e-3 on a BN scale of 1.45 after 3 steps; the
    float64 test above shows the computation itself is the same)."""
    data, names = mirrored_run(tmp_path)
    for name in names:
        copies = data[f"mirrored::{name}"]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {name}")
    assert float(data["mirrored_loss"]) == pytest.approx(float(data["single_loss"]), abs=1e-5)
    assert _max_gap(data, names) < 1e-2
    assert _max_gap(data, [n for n in names if "_bn" not in n and "/bn/" not in n]) < 1e-4


@pytest.mark.parametrize("method", [
    pytest.param("byol_beta", marks=pytest.mark.slow), "simclr",  # simclr: gathered negatives
    pytest.param("moco", marks=pytest.mark.slow), pytest.param("multiview", marks=pytest.mark.slow)])
def test_other_methods_under_mirrored_strategy_equal_one_device(tmp_path, method):
    """Negatives gathered from every replica (β-InfoNCE, NT-Xent, MoCo's enqueued keys) with
    their gradients: 2 replicas of 8 = one device with 16 (float64), weights, queue and all."""
    data, names = mirrored_run(tmp_path, f"--method={method}", "--float64")
    assert int(data["mirrored_steps"]) == 3
    if method == "moco":
        pointer = next(n for n in names if n.endswith("/queue_pointer"))
        assert any(n.endswith("/queue") for n in names)
        assert int(data[f"single::{pointer}"][0]) == 48 % 64
    for name in names:
        copies = data[f"mirrored::{name}"]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {name}")
        np.testing.assert_allclose(copies[0], data[f"single::{name}"][0], atol=1e-9, err_msg=name)
    assert float(data["mirrored_loss"]) == pytest.approx(float(data["single_loss"]), abs=1e-9)


@pytest.mark.slow  # ~27 s
def test_mirrored_strategy_per_replica_batch_norm_keeps_replicas_identical(tmp_path):
    data, names = mirrored_run(tmp_path, "--sync_bn=0")
    for name in names:
        copies = data[f"mirrored::{name}"]
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=f"replicas differ: {name}")
    # Per-replica statistics are a different computation from one device's global batch.
    gap = max(float(np.abs(data[f"mirrored::{n}"][0] - data[f"single::{n}"][0]).max()) for n in names)
    assert gap > 1e-3


@pytest.mark.parametrize("jit", [False, pytest.param(True, marks=pytest.mark.slow)])
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
    assert all(t.dtype == "float32" for t, _ in model.target_pairs())


def free_ports(n):
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow  # ~55 s, two worker processes
def test_multi_worker_mirrored_two_processes(tmp_path):
    """Two workers on 127.0.0.1 train the same model in lockstep; only the chief writes."""
    import json

    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    run_dir = tmp_path / "run"
    processes = []
    for index in range(2):
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(scratch),
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        command = [sys.executable, str(ROOT / "train.py"), "--strategy=multi_worker",
                   "--epochs=1", "--steps_per_epoch=3", "--batch_size=16", "--hidden_dim=32",
                   "--projection_dim=16", "--checkpoint_every=1", "--noknn",
                   f"--run_dir={run_dir}", f"--final_weights_npz={tmp_path / f'worker{index}.npz'}"]
        # Output to files: a worker blocked on a full pipe would stall the other's collectives.
        with open(tmp_path / f"worker{index}.log", "w") as log:
            processes.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log,
                                              stderr=subprocess.STDOUT))
    # Both exit: a worker that finished first must not hang at exit (train.py finish_together).
    try:
        for index, p in enumerate(processes):
            assert p.wait(timeout=600) == 0, (tmp_path / f"worker{index}.log").read_text()[-3000:]
    finally:
        for p in processes:
            p.kill()  # (no-op for a process that has exited)
    chief, other = np.load(tmp_path / "worker0.npz"), np.load(tmp_path / "worker1.npz")
    assert int(chief["step"]) == int(other["step"]) == 3
    for name in chief.files:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["replicas"] == 2 and config["strategy"] == "multi_worker"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted(
        f"ckpt-{s}.{ext}" for s in (1, 2, 3) for ext in ("json", "weights.h5"))
    assert (run_dir / "byol.keras").exists() and (run_dir / "metrics.json").exists()
    # The other worker wrote its checkpoints into its own temporary folder and removed them.
    assert list((tmp_path / "tmp1").iterdir()) == []
