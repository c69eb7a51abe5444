"""train.py end to end on the bundled sample: the run folder holds what it promises."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import byol_tf  # (also registers byol_tf classes for load_model)
from helpers.commands import evaluate, run_command, train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_train(*args):
    return train(*args, timeout=900)


def run_eval(*args):
    return evaluate(*args, timeout=900)


def test_train_py_writes_a_complete_run_folder(tmp_path):
    run_dir = tmp_path / "run"
    result = run_train("--epochs=2", "--steps_per_epoch=3", "--batch_size=64", "--seed=3",
                       "--max_eval_examples=400", f"--run_dir={run_dir}", "--publish=demo",
                       "--publish_linear_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("config.json", "metrics.json", "history.csv", "byol.keras", "encoder.keras",
                 "checkpoints", "tensorboard", "export/byol_encoder/1/saved_model.pb"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["seed"] == 3 and config["config"]["batch_size"] == 64
    assert config["config"]["encoder"] == "tiny_resnet_cifar"  # from the sample preset
    assert config["config"]["total_steps"] == 6
    assert {"tensorflow", "keras", "python", "numpy"} <= set(config["versions"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 2
    rates = metrics["images_per_second"]  # 3 steps of 64 images an epoch
    assert set(rates) == {"1", "2"} and all(rate > 0 for rate in rates.values())
    assert "images_per_second: " in result.stdout  # each epoch's line ends with its rate
    # The evaluate phase and the publish's linear evaluation say what they do, and how fast.
    assert "kNN evaluation of the pretrained encoder:\nfeatures of 400 images: " in result.stdout
    assert "kNN evaluation of the same encoder at random init:" in result.stdout
    assert "Linear evaluation for the zoo entry 'demo' (1 epochs):" in result.stdout
    # The default log is quiet: none of TensorFlow's start-up lines, no framework INFO.
    assert not [line for line in result.stderr.splitlines()
                if any(word in line for word in ("cuda", "cuInit", "oneDNN", "] ", "INFO"))]
    assert 0 <= metrics["knn"]["pretrained"] <= 1 and 0 <= metrics["knn"]["random_init"] <= 1
    assert metrics["knn"]["test_examples"] == 400
    assert "kNN top-1" in result.stdout and "Zoo entry:" in result.stdout
    card = json.loads((run_dir / "zoo" / "demo" / "model_card.json").read_text())
    assert card["pretraining"]["recipe"]["seed"] == 3 and "linear_top1" in card["results"]
    # The saved model resumed: step counter 6, so τ and the LR continue from there.
    model = keras.models.load_model(run_dir / "byol.keras")
    assert int(model.optimizer.iterations) == 6
    encoder = keras.models.load_model(run_dir / "encoder.keras")
    assert isinstance(encoder, byol_tf.ImageEncoder) and encoder.image_size == 32
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(encoder(x), model(x), atol=1e-6)

    # A finished run folder is never overwritten by another config.
    again = run_train("--epochs=1", f"--run_dir={run_dir}")
    assert again.returncode != 0 and "another config" in again.stderr
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


@pytest.mark.slow  # ~30 s, subprocesses; the TFDS pipeline is in test_data_eval.py
def test_train_and_eval_on_real_cifar10(tmp_path, cifar10_dir):
    run_dir = tmp_path / "cifar"
    result = run_train("--dataset=cifar10", f"--data_dir={cifar10_dir / 'tfds'}",
                       "--encoder=tiny_resnet_cifar", "--hidden_dim=256", "--batch_size=64",
                       "--epochs=1", "--steps_per_epoch=3", "--max_eval_examples=1000",
                       f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["preset"] == "cifar10" and config["tau_base"] == 0.99  # preset, flags on top
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["knn"]["train_examples"] == 1000

    out = tmp_path / "knn.json"
    result = run_eval(f"--model={run_dir / 'byol.keras'}", "--dataset=cifar10",
                      f"--data_dir={cifar10_dir / 'tfds'}", "--max_examples=1000", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(out.read_text())
    # Same encoder, same data, same protocol: eval.py reproduces train.py's number.
    assert evaluated["top1"] == metrics["knn"]["pretrained"]
    assert evaluated["protocol"] == "knn" and evaluated["test_examples"] == 1000
    assert evaluated["top1"] <= evaluated["top5"] <= 1

    bad = run_eval(f"--model={tmp_path / 'missing.keras'}")
    assert bad.returncode != 0 and "no such file" in bad.stderr


def test_train_py_reports_bad_dataset(tmp_path):
    result = run_train("--dataset=cifar10", f"--data_dir={tmp_path}", f"--run_dir={tmp_path}/r")
    assert result.returncode != 0 and "not prepared" in result.stderr


def test_train_py_runs_another_method_and_checks_its_options(tmp_path):
    run_dir = tmp_path / "moco"
    result = run_train("--method=moco", '--method_options={"queue_size": 256, "temperature": 0.3}',
                       "--epochs=1", "--steps_per_epoch=2", "--batch_size=64", "--hidden_dim=64",
                       "--noknn", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["method"] == "moco" and config["method_options"]["queue_size"] == 256
    model = keras.models.load_model(run_dir / "byol.keras")
    assert isinstance(model, byol_tf.MoCo) and model.queue_size == 256 and model.temperature == 0.3
    assert int(model.queue_pointer.numpy()) == 128  # 2 steps of 64 keys
    bad = run_train("--method=simclr", '--method_options={"tau_base": 0.5}', "--epochs=1",
                    f"--run_dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "tau_base" in bad.stderr
    bad = run_train("--method_options=not json", f"--run_dir={tmp_path / 'bad2'}")
    assert bad.returncode != 0 and "not valid JSON" in bad.stderr


def test_train_py_on_a_folder_of_unlabelled_images(tmp_path):
    """A user's own folder without class sub-folders (PNGs of 40×36) trains and exports."""
    import tensorflow as tf

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        image = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    run_dir = tmp_path / "run"
    result = run_train(f"--dataset={folder}", "--encoder=tiny_resnet_cifar", "--image_size=32",
                       "--batch_size=8", "--epochs=1", "--hidden_dim=64", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["final_step"] == 2 and "knn" not in metrics  # no labels: no kNN
    assert (run_dir / "export" / "byol_encoder" / "1" / "saved_model.pb").exists()


def own_lines(stderr):
    return [line for line in stderr.splitlines() if line.strip()]


def test_the_default_log_is_quiet_and_verbosity_shows_everything(tmp_path):
    """Without TF_CPP_MIN_LOG_LEVEL set: no CUDA probe, oneDNN or CPU-feature lines and no
    framework INFO (the export writes ~10 otherwise); `--verbosity=0` with
    TF_CPP_MIN_LOG_LEVEL=0 shows them."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    args = [sys.executable, "train.py", "--epochs=1", "--steps_per_epoch=1", "--noknn"]
    quiet = subprocess.run([*args, f"--run_dir={tmp_path / 'quiet'}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert own_lines(quiet.stderr) == [], quiet.stderr[-2000:]
    loud = subprocess.run([*args, f"--run_dir={tmp_path / 'loud'}", "--verbosity=0"], cwd=ROOT,
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="0"), capture_output=True,
                          text=True, timeout=600)
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Assets written to" in loud.stderr and "] " in loud.stderr


@pytest.mark.parametrize("args,names", [
    (["--method=foo"], ["--method=foo", "byol|simclr|moco|multiview"]),
    (["--epochs=abc"], ["--epochs=abc"]),
    (["--epochz=3"], ["epochz"]),
    (["--encoder=resnet19"], ["--encoder", "resnet19", "resnet18"]),
    (["--tau_base=2"], ["--tau_base", "[0, 1]"]),
])
def test_a_bad_flag_is_one_line_and_status_2(tmp_path, args, names):
    result = run_train(*args, f"--run_dir={tmp_path / 'run'}")
    lines = own_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("train.py: error: ") and all(n in lines[0] for n in names)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_help_exits_0_with_the_flags():
    for script, flag in (("train.py", "--dataset"), ("eval.py", "--mode")):
        result = run_command(script, "--help", timeout=900)
        assert result.returncode == 0 and flag in result.stdout and "Flags:" in result.stdout
