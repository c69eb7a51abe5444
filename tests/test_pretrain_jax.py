"""scripts/pretrain_jax.py (the GPU machines' trainer) on a CPU: the JAX backend trains from
in-memory arrays, a run stopped by its time limit resumes to exactly the weights of an
uninterrupted one, and --finalize (TF backend) reproduces the JAX run's embeddings and
writes the encoder that zoo.publish and the SavedModel export use."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import byol_tf  # noqa: F401  (registers byol_tf's layers for load_model)

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts/pretrain_jax.py"
FLAGS = ["--dataset_name=sample", "--preset=sample", "--epochs=2", "--batch_size=100",
         "--hidden_dim=64", "--precision=float32"]


def _run(backend, *args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.mark.slow  # ~95 s, subprocesses; the JAX step itself is in test_backends.py
def test_jax_pretraining_resumes_exactly_and_finalizes(tmp_path):
    pytest.importorskip("jax")
    from byol_tf import data

    sample = data.load_sample()  # 400 real training images keep the four runs short
    np.savez(tmp_path / "small.npz", x_train=sample["x_train"][:400], y_train=sample["y_train"][:400],
             x_test=sample["x_test"][:100], y_test=sample["y_test"][:100])
    flags = [f"--data={tmp_path / 'small.npz'}", *FLAGS]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    out = _run("jax", *flags, f"--run_dir={whole}")
    assert "finished: kNN top-1" in out
    first = _run("jax", *flags, f"--run_dir={parts}", "--time_limit=0.001")
    assert "stopped after epoch 1" in first and (parts / "checkpoint.npz").exists()
    second = _run("jax", *flags, f"--run_dir={parts}", "--time_limit=0.001")
    assert "resumed at epoch 1" in second and "finished" in second
    assert not (parts / "checkpoint.npz").exists()
    with np.load(whole / "weights.npz") as a, np.load(parts / "weights.npz") as b:
        assert sorted(a) == sorted(b) and len(a) > 100
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)

    metrics = json.loads((whole / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert 0.0 <= metrics["knn_top1"] <= 1.0 and metrics["seconds_per_epoch"] > 0
    losses = [e["loss"] for e in metrics["epochs"]]
    assert all(np.isfinite(losses))
    record = json.loads((whole / "config.json").read_text())
    assert record["versions"]["keras_backend"] == "jax" and record["config"]["epochs"] == 2

    # Another config in the same folder is refused; a finished run is not redone.
    with pytest.raises(AssertionError, match="another config"):
        _run("jax", *flags[:-1], "--precision=mixed_bfloat16", f"--run_dir={whole}")
    assert "already holds the final weights" in _run("jax", *flags, f"--run_dir={whole}")

    finalized = _run("tensorflow", "--finalize", f"--run_dir={whole}")
    gap = float(finalized.split("max relative difference ")[1].split()[0])
    assert gap <= 1e-4
    import keras

    encoder = keras.models.load_model(whole / "encoder.keras")
    with np.load(whole / "check_embeddings.npz") as f:
        images, expected = f["images"], f["embeddings"]
    from helpers.reference import reference_embedding

    np.testing.assert_allclose(reference_embedding(encoder.encoder, images), expected,
                               rtol=1e-4, atol=1e-4)
    config = json.loads((whole / "config.json").read_text())["config"]
    assert config["total_steps"] == 2 * (400 // 100)
