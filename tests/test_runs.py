"""The run folder (byol_tf.runs, train.py): nothing is written before the whole config is
valid; every phase survives a kill and a rerun finishes the run with the outputs of an
uninterrupted one; a full disk gives a clear error and leaves nothing half-written."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_tf import export, records
from byol_tf.training import pictures
from byol_tf.training import run_folder as runs
from helpers.png import png_size
from helpers.commands import ENV, train
from helpers.models import config_stand_in

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--epochs=2", "--steps_per_epoch=2", "--batch_size=32", "--hidden_dim=32",
         "--projection_dim=16", "--deterministic", "--max_eval_examples=200",
         "--publish_linear_epochs=1", "--knn_every=1", "--noknn_random_init"]


@pytest.mark.parametrize("bad,message", [
    ("--encoder=resnet_unknown", "resnet_unknown"),
    ('--method_options={"no_such_option": 1}', "no_such_option"),
    ('--method_options={"view1": {"crop_aera": [0.2, 1.0]}}', "view1: view config: missing keys [], unknown keys ['crop_aera']"),
    ("--tau_base=2", "tau_base"),
    ("--epochs=0", "epochs"),
    ("--time_limit_minutes=0", "time_limit_minutes"),
])
def test_a_bad_flag_writes_nothing(tmp_path, bad, message):
    run_dir = tmp_path / "run"
    result = train(bad, f"--run_dir={run_dir}")
    assert result.returncode != 0 and message in result.stderr
    assert not run_dir.exists(), "nothing may be written before the config is valid"


def _labelled_folder(folder, per_class=6, seed=0):
    """Two classes that differ (dark and bright images of varying sizes)."""
    rng = np.random.default_rng(seed)
    for label, (low, high) in (("dark", (0, 100)), ("bright", (156, 256))):
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(32, 48, 2)
            image = rng.integers(low, high, (h, w, 3), dtype=np.uint8)
            (folder / label / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    return folder


def test_a_labelled_folder_trains_and_evaluates_on_its_test_folder(tmp_path):
    train_folder = _labelled_folder(tmp_path / "train")
    test_folder = _labelled_folder(tmp_path / "val", per_class=3, seed=1)
    args = [f"--dataset={train_folder}", "--encoder=tiny_resnet_cifar", "--image_size=32",
            "--batch_size=4", "--epochs=1", "--hidden_dim=32", "--projection_dim=16"]
    # kNN needs a test split: refused before anything is written, without --eval_dataset.
    refused = train(*args, f"--run_dir={tmp_path / 'refused'}")
    assert refused.returncode != 0 and "--eval_dataset" in refused.stderr
    assert not (tmp_path / "refused").exists()
    run_dir = tmp_path / "run"
    result = train(*args, f"--eval_dataset={test_folder}", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    knn = json.loads((run_dir / "metrics.json").read_text())["knn"]
    assert knn["train_examples"] == 12 and knn["test_examples"] == 6
    # eval.py's supervised modes on the same folders.
    out = tmp_path / "linear.json"
    evaluated = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"--model={run_dir / 'encoder.keras'}",
         "--mode=linear", "--epochs=1", f"--dataset={train_folder}",
         f"--eval_dataset={test_folder}", f"--out={out}"],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(out.read_text())["test_examples"] == 6
    # Pictures: the folder's class names label the neighbour grid; eval.py's confusion matrix.
    assert png_size(run_dir / "neighbours.png") == _grid_size(rows=2)
    assert png_size(out.with_name("linear_confusion.png")) == (700, 600)


def _grid_size(rows, k=8, side=32, zoom=3):
    left, _ = pictures.cell_box(0, k, side, zoom)
    _, top = pictures.cell_box(rows, 0, side, zoom)
    return (left + side * zoom + pictures.FRAME + pictures.GAP, top - pictures.FRAME)


def test_a_run_draws_its_curves_and_neighbours(uninterrupted):
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    # --knn_every=1: the learning curve has a kNN point per epoch, and the last one is the
    # evaluate phase's kNN (same weights, same examples: it reuses the last point's features;
    # the kill-in-evaluate rerun, which recomputes them from encoder.keras, gets the same).
    # --noknn_random_init: no random-init baseline.
    knn_curve = metrics["history"]["knn_top1"]
    assert len(knn_curve) == 2 and all(0 <= a <= 1 for a in knn_curve)
    assert knn_curve[-1] == metrics["knn"]["pretrained"]
    assert "random_init" not in metrics["knn"]
    assert "knn_top1" in (uninterrupted / "history.csv").read_text().splitlines()[0]
    assert png_size(uninterrupted / "curves.png") == (1500, 300)
    assert png_size(uninterrupted / "neighbours.png") == _grid_size(rows=10)


def test_a_run_records_where_its_time_went(uninterrupted):
    """phases.json and metrics.json give each phase's wall seconds; they follow one another
    within the process's own wall time, and the train phase holds the time inside `fit`."""
    metrics = json.loads((uninterrupted / "metrics.json").read_text())
    seconds = metrics["phase_seconds"]
    assert list(seconds) == ["train", "save", "evaluate", "export"]  # (publish comes after)
    assert all(s > 0 for s in seconds.values())
    assert seconds["train"] >= metrics["train_seconds"]
    publish = runs.RunFolder(uninterrupted).done("publish")["seconds"]
    assert sum(seconds.values()) + publish <= WALL_SECONDS[uninterrupted]


def _phase_kill(run_dir, args, after_phase):
    """Starts train.py and SIGKILLs it as soon as `after_phase` is recorded (so inside the
    next phase); returns the return code."""
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline:
        if after_phase in runs.RunFolder(run_dir).phases():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    return process.wait()


def _outputs(run_dir):
    model = keras.models.load_model(run_dir / "byol.keras")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return ({v.path + str(i): v.numpy() for i, v in enumerate(model.weights)},
            metrics["history"], metrics["knn"], (run_dir / "history.csv").read_text())


def _assert_same_outputs(run_dir, reference_dir):
    """The run's weights (bit for bit), history, kNN and history.csv equal the reference's;
    returns the run's outputs."""
    want, got = _outputs(reference_dir), _outputs(run_dir)
    for name in want[0]:
        np.testing.assert_array_equal(got[0][name], want[0][name], err_msg=name)
    assert got[1:] == want[1:]
    return got


WALL_SECONDS = {}  # run folder → wall seconds of the train.py process that made it


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "whole"
    started = time.time()
    result = train(*SMALL, f"--run_dir={run_dir}", "--publish=entry")
    WALL_SECONDS[run_dir] = time.time() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run_dir / ".lock").exists()  # a run that ends leaves no lock file
    return run_dir


@pytest.mark.parametrize("after_phase", [  # kill inside save, kNN, export (default), publish
    pytest.param("train", marks=pytest.mark.slow), pytest.param("save", marks=pytest.mark.slow),
    "evaluate", pytest.param("export", marks=pytest.mark.slow)])
def test_a_kill_in_any_phase_then_a_rerun_equals_an_uninterrupted_run(uninterrupted, tmp_path,
                                                                      after_phase):
    run_dir = tmp_path / "run"
    args = [*SMALL, f"--run_dir={run_dir}", "--publish=entry"]
    _phase_kill(run_dir, args, after_phase)
    result = train(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(runs.RunFolder(run_dir).phases()) == set(runs.PHASES)
    got = _assert_same_outputs(run_dir, uninterrupted)
    assert len(got[3].strip().splitlines()) == 1 + 2  # a header and one row per epoch
    version = run_dir / "export" / "byol_encoder"
    assert sorted(p.name for p in version.iterdir()) == ["1"]
    # Rerun of a finished run: nothing to redo, nothing changes.
    before = (run_dir / "phases.json").read_text()
    again = train(*args)
    assert again.returncode == 0 and (run_dir / "phases.json").read_text() == before
    # Evaluation and publish options may change; the training config may not.
    changed = train(*[a for a in args if a != "--epochs=2"], "--epochs=3")
    assert changed.returncode != 0 and "another config" in changed.stderr


def test_time_limited_segments_equal_an_uninterrupted_run(uninterrupted, tmp_path):
    """--time_limit_minutes stops at an epoch's end (the limit here is shorter than any
    epoch: one epoch per process); rerunning the command resumes; the finished run equals an
    uninterrupted one, and records each process as a segment (steps, seconds, host)."""
    run_dir = tmp_path / "run"
    args = [*SMALL, f"--run_dir={run_dir}", "--publish=entry", "--time_limit_minutes=0.0001"]
    first = train(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Stopped at the time limit after step 2 of 4" in first.stdout
    assert "train" not in runs.RunFolder(run_dir).phases()
    second = train(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    _assert_same_outputs(run_dir, uninterrupted)
    trained = runs.RunFolder(run_dir).done("train")
    assert trained["final_step"] == 4
    segments = json.loads((run_dir / "metrics.json").read_text())["segments"]
    assert [(s["first_step"], s["last_step"]) for s in segments] == [(0, 2), (2, 4)]
    assert all(s["cpu"] == records.host()["cpu"] and s["train_seconds"] > 0 for s in segments)
    assert sum(s["train_seconds"] for s in segments) == pytest.approx(trained["train_seconds"],
                                                                      abs=0.2)
    whole = json.loads((uninterrupted / "metrics.json").read_text())["segments"]
    assert [(s["first_step"], s["last_step"]) for s in whole] == [(0, 4)]


def test_a_zoo_entry_shows_its_runs_pictures_and_training_time(uninterrupted):
    entry = uninterrupted / "zoo" / "entry"
    card = json.loads((entry / "model_card.json").read_text())
    assert card["pictures"] == ["curves.png", "neighbours.png"]
    for name in card["pictures"]:  # the run's pictures, listed with their hashes
        assert (entry / name).read_bytes() == (uninterrupted / name).read_bytes()
        assert name in card["files"]
        assert f"]({name})" in (entry / "README.md").read_text()
    train_seconds = json.loads((uninterrupted / "metrics.json").read_text())["train_seconds"]
    assert card["pretraining"]["train_hours"] == round(train_seconds / 3600, 3)
    assert len(card["pretraining"]["segments"]) == 1
    assert records.host()["cpu"] in (entry / "README.md").read_text()


def test_a_finished_run_publishes_when_asked_later(tmp_path):
    run_dir = tmp_path / "run"
    args = ["--epochs=1", "--steps_per_epoch=1", "--batch_size=32", "--hidden_dim=32",
            "--projection_dim=16", "--noknn", f"--run_dir={run_dir}"]
    assert train(*args).returncode == 0
    assert "publish" not in runs.RunFolder(run_dir).phases()
    result = train(*args, "--publish=later", "--publish_linear_epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert runs.RunFolder(run_dir).done("publish")["entry"] == str(run_dir / "zoo" / "later")
    assert (run_dir / "zoo" / "later" / "model_card.json").exists()


def test_publish_to_an_existing_entry_is_refused_before_training(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    zoo_dir = uninterrupted / "zoo"
    result = train(*SMALL, f"--run_dir={run_dir}", "--publish=entry", f"--zoo_dir={zoo_dir}")
    assert result.returncode != 0 and "was not published from this run" in result.stderr
    assert not run_dir.exists()


def test_a_full_disk_during_export_leaves_nothing_behind(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[:200]}")
    try:
        import byol_tf

        model = byol_tf.BYOL("tiny_resnet_cifar", hidden_dim=32, projection_dim=8, image_size=32)
        with pytest.raises(OSError, match="export to .* failed, nothing was written: .*space"):
            export.export_encoder(model.image_encoder(), disk / "byol_encoder" / "1")
        assert list((disk / "byol_encoder").iterdir()) == []
        run = runs.RunFolder(disk)
        with pytest.raises(OSError):
            run.save_keras(model, "byol.keras")
        assert list(disk.glob("*.keras")) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def _image_folder(folder, n=16, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
        (folder / f"{i:02d}.png").write_bytes(tf.io.encode_png(image).numpy())
    return folder


def test_unreadable_images_are_named_or_skipped(tmp_path):
    from byol_tf import data

    folder = _image_folder(tmp_path / "images")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("a text file named .jpg")
    with pytest.raises(ValueError, match=r"2 unreadable image file\(s\): .*empty\.jpg: empty "
                                         r"file; .*notes\.jpg: not a JPEG"):
        data.pretrain_dataset(str(folder), 4, image_size=32)
    ds, info = data.pretrain_dataset(str(folder), 4, image_size=32, skip_bad_images=True)
    assert info["num_examples"] == 16
    # Truncated files pass the first-bytes check; a decode names them.
    truncated = folder / "03.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (folder / "empty.jpg").unlink()
    (folder / "notes.jpg").unlink()
    bad = data.undecodable_images(sorted(str(p) for p in folder.iterdir()))
    assert [(pathlib.Path(p).name, "PNG" in problem) for p, problem in bad] == [("03.png", True)]


@pytest.mark.slow  # ~27 s; data.undecodable_images names them in the default suite
def test_train_py_names_a_truncated_image_and_skips_it_when_asked(tmp_path):
    folder = _image_folder(tmp_path / "images")
    truncated = folder / "05.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    args = [f"--dataset={folder}", "--encoder=tiny_resnet_cifar", "--image_size=32",
            "--batch_size=8", "--epochs=1", "--hidden_dim=32", "--projection_dim=16"]
    result = train(*args, f"--run_dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "05.png" in result.stderr and "--skip_bad_images" in result.stderr
    result = train(*args, "--skip_bad_images", f"--run_dir={tmp_path / 'skipped'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "skipped" / "export" / "byol_encoder" / "1").exists()


@pytest.mark.slow  # ~17 s
def test_bfloat16_on_a_cpu_without_native_bfloat16_warns(tmp_path):
    from byol_tf.records import host

    if {"avx512_bf16", "amx_bf16"} & set(host()["isa"]):
        pytest.skip("this CPU has native bfloat16")
    result = train("--precision=mixed_bfloat16", "--epochs=1", "--steps_per_epoch=1",
                   "--batch_size=16", "--hidden_dim=32", "--noknn", f"--run_dir={tmp_path / 'r'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "without native bfloat16" in result.stderr and host()["cpu"] in result.stderr


def test_a_trained_run_without_its_saved_models_is_refused(tmp_path):
    """A folder that kept only a finished run's records (as the published CIFAR-10 run in
    runs/ does) is named as such instead of failing later on a missing file."""
    run, config = runs.RunFolder(tmp_path / "run"), config_stand_in(epochs=1)
    run.start(config, ["train.py"], {})
    run.finish("train")
    for name in ("byol.keras", "encoder.keras"):
        (run.path / name).write_bytes(b"saved")
    run.finish("save", files=["byol.keras", "encoder.keras"])
    run.check(config)
    (run.path / "encoder.keras").unlink()
    with pytest.raises(ValueError, match=r"saved models are gone \(encoder\.keras\); to train "
                                         r"again, choose another run folder"):
        run.check(config)


def test_a_folder_run_and_its_evaluation_are_never_silent_for_long_in_a_log(tmp_path):
    """train.py and eval.py on image folders, their output read from a pipe as a log file gets
    it: no gap of more than 10 s between lines (start-up, the first step's compilation,
    training and evaluation say what they are doing), no terminal codes, one line per epoch."""
    from helpers.commands import timed_lines
    from helpers.folders import jpeg_folder

    train_folder = jpeg_folder(tmp_path / "train", 64, side=96)
    test_folder = jpeg_folder(tmp_path / "test", 16, side=96)
    code, trained = timed_lines("train.py", f"--dataset={train_folder}",
                                f"--eval_dataset={test_folder}", "--epochs=2",
                                f"--run_dir={tmp_path / 'run'}")
    assert code == 0, "\n".join(line for _, line in trained[-20:])
    code, evaluated = timed_lines("eval.py", f"--model={tmp_path / 'run' / 'encoder.keras'}",
                                  f"--dataset={train_folder}", f"--eval_dataset={test_folder}")
    assert code == 0, "\n".join(line for _, line in evaluated[-20:])
    for lines in (trained, evaluated):
        times = [0.0] + [t for t, _ in lines]
        gaps = [(b - a, line) for a, b, (_, line) in zip(times, times[1:], lines)]
        assert max(gaps)[0] <= 10.0, max(gaps)
        assert not [line for _, line in lines if "\x1b[" in line]
    epochs = [line for _, line in trained if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["Epoch 1/2", "Epoch 2/2"]
    assert all(" - loss: " in line for line in epochs)
