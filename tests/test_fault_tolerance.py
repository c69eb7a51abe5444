"""A killed train.py resumes exactly; a corrupt newest checkpoint falls back to the one before."""

import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from byol_tf.training.checkpoints import CheckpointManager
from helpers.models import tiny_byol

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARGS = ["--epochs=4", "--steps_per_epoch=5", "--batch_size=32", "--hidden_dim=64",
        "--projection_dim=32", "--checkpoint_every=2", "--deterministic", "--seed=1",
        "--noknn", "--method=byol"]  # (BYOL's target is restored too; a folder's recipe is SimCLR)
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def image_folder(root, count=160):
    """`count` PNGs of varying size (36–52 px), in two class sub-folders."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for i in range(count):
        side = 36 + i % 17
        image = rng.integers(0, 256, (side, side + i % 5, 3), dtype=np.uint8)
        path = root / f"class{i % 2}" / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tf.io.encode_png(image).numpy())
    return root


def train_command(run_dir, weights, dataset_args=()):
    return [sys.executable, str(ROOT / "train.py"), *ARGS, *dataset_args,
            f"--run_dir={run_dir}", f"--final_weights_npz={weights}"]


@pytest.mark.parametrize("source", ["sample", "folder"])
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, source):
    """The bundled sample (views drawn in the step, from the checkpointed seed state) and a
    folder of images of varying size (crops drawn in tf.data from the stream position)."""
    dataset_args = ()
    if source == "folder":
        dataset_args = (f"--dataset={image_folder(tmp_path / 'images')}", "--image_size=32")
    command = functools.partial(train_command, dataset_args=dataset_args)

    reference = subprocess.run(command(tmp_path / "ref", tmp_path / "ref.npz"), cwd=ROOT,
                               env=ENV, capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]

    run_dir = tmp_path / "killed"
    process = subprocess.Popen(command(run_dir, tmp_path / "killed.npz"), cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manager = CheckpointManager(run_dir / "checkpoints")
    deadline = time.time() + 300
    while time.time() < deadline and not any(s >= 6 for s in manager.steps()):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # steps 6–7 of 20: inside epoch 2 (5 steps an epoch)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    steps = manager.steps()
    assert steps and steps[0] < 20, steps

    # Corrupt the newest checkpoint: the resume must fall back to the one before, say so,
    # and still end exactly where the uninterrupted run ended.
    newest = run_dir / "checkpoints" / f"ckpt-{steps[0]}.weights.h5"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    resumed = subprocess.run(command(run_dir, tmp_path / "killed.npz"), cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ckpt-{steps[0]}.weights.h5 is unusable: sha256 mismatch" in resumed.stderr
    assert f"(step {steps[1]})." in resumed.stdout  # resumed from the one before
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == steps[1] and metrics["final_step"] == 20
    # The history is part of the checkpoint: after the kill it equals the uninterrupted
    # run's, one row per epoch, the resumed epoch's averages included.
    reference_metrics = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert metrics["history"] == reference_metrics["history"]
    assert len(metrics["history"]["loss"]) == 4
    assert (run_dir / "history.csv").read_text() == (tmp_path / "ref" / "history.csv").read_text()
    assert metrics["train_seconds"] > 0

    want, got = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "killed.npz")
    assert int(want["step"]) == int(got["step"]) == 20
    assert set(want.files) == set(got.files)
    names = [n for n in want.files if n != "step"]
    assert any(n.startswith("target_") for n in names) and any("optimizer" not in n for n in names)
    for name in names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_checkpoint_manager_keeps_last_n_and_skips_bad_ones(tmp_path, caplog):
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    model = tiny_byol(total_steps=10)
    manager = CheckpointManager(tmp_path, keep=2)
    saved = {}
    for step in (1, 2, 3):
        model.fit(x, batch_size=8, verbose=0)
        manager.save(model, step)
        saved[step] = [w.numpy().copy() for w in model.weights]
    assert manager.steps() == [3, 2]  # the oldest is gone
    assert not list(tmp_path.glob(".*partial*"))  # no temporary file left
    (tmp_path / "ckpt-3.weights.h5").write_bytes(b"truncated")
    fresh = tiny_byol(total_steps=10)
    with caplog.at_level("WARNING"):
        assert manager.restore(fresh) == 2
    assert "ckpt-3.weights.h5 is unusable" in caplog.text and "truncated" in caplog.text
    for got, want in zip(fresh.weights, saved[2]):
        np.testing.assert_array_equal(got.numpy(), want)
    assert int(fresh.optimizer.iterations.numpy()) == 2
    # Nothing usable: start from scratch (step 0), never from a broken file.
    (tmp_path / "ckpt-2.json").write_text("{not json")
    assert manager.restore(tiny_byol(total_steps=10)) == 0
    with pytest.raises(ValueError, match="keep"):
        CheckpointManager(tmp_path, keep=0)


def test_non_chief_writes_nothing(tmp_path):
    model = tiny_byol(total_steps=10)
    CheckpointManager(tmp_path / "ckpts", is_chief=False).save(model, 1)
    assert not (tmp_path / "ckpts").exists()
