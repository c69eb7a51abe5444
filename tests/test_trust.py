"""Nothing unverified is trusted: one writer per run folder and zoo entry, records checked
against what they claim, bad images skipped wherever images are read, a folder pair with other
classes refused before training, and diverging training stopped before it is saved."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from byol_tf import export, files
from byol_tf.training import run_folder as runs
from helpers.commands import ENV, train
from helpers.models import config_stand_in

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--epochs=1", "--steps_per_epoch=2", "--batch_size=16", "--hidden_dim=32",
        "--projection_dim=16", "--max_eval_examples=100", "--noknn_random_init"]


def last_line(stderr):
    return [line for line in stderr.splitlines() if line.strip()][-1]


def test_a_lock_admits_one_process_and_is_freed_when_its_holder_dies(tmp_path):
    lock = tmp_path / "run" / ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from byol_tf import files; "
         f"files.hold_lock({str(lock)!r}, 'x'); print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, env=dict(ENV, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.LockedError, match=rf"run folder .* is in use by another "
                                                    rf"process \(pid {holder.pid} on "):
            files.hold_lock(lock, f"run folder {lock.parent}")
    finally:
        holder.kill()
        holder.wait()
    files.hold_lock(lock, "run folder")  # the kernel released the killed holder's lock
    assert f"pid {os.getpid()} " in lock.read_text()
    files.release_lock(lock)


def test_a_removed_lock_file_is_not_taken_by_a_process_that_opened_it(tmp_path, monkeypatch):
    """The holder removes its lock file as it releases it (`release_lock(remove=True)`: a run
    that ends leaves no `.lock`). A process that opened the file just before must not end up
    locking the removed file (then two processes would hold "the" lock): here the holder's
    removal happens between the waiter's open and its flock."""
    lock = tmp_path / "run" / ".lock"
    files.hold_lock(lock, "run folder")
    files.release_lock(lock, remove=True)
    assert not lock.exists()
    real_flock, raced = files.fcntl.flock, []

    def flock_after_the_holder_removed_it(fd, operation):
        if not raced:  # the first attempt: its file was removed (and another made) meanwhile
            raced.append(os.fstat(fd).st_ino)
            lock.unlink()
            lock.write_text("another holder's")
        return real_flock(fd, operation)

    lock.write_text("")
    monkeypatch.setattr(files.fcntl, "flock", flock_after_the_holder_removed_it)
    assert files.hold_lock(lock, "run folder")
    held = files._HELD[str(lock)]
    assert os.fstat(held).st_ino == lock.stat().st_ino != raced[0]
    assert f"pid {os.getpid()} " in lock.read_text()
    files.release_lock(lock, remove=True)
    assert not lock.exists()


def test_a_second_train_py_on_a_run_folder_is_refused_naming_the_first(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, "--epochs=30",
                              f"--run_dir={run_dir}"], cwd=ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (run_dir / "config.json").exists() and time.time() < deadline:
            time.sleep(0.5)
        second = train(*TINY, "--epochs=30", f"--run_dir={run_dir}")
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2, second.stderr[-2000:]
    assert f"run folder {run_dir} is in use by another process (pid {first.pid} " in \
        last_line(second.stderr)


def test_a_publish_stages_under_its_own_name_and_clears_what_a_killed_writer_left(
        published_run, tmp_path):
    import keras

    import byol_tf
    from byol_tf.training import publish

    run_dir, _ = published_run
    leftover = tmp_path / ".demo.staging-999999"
    (leftover / "saved_model").mkdir(parents=True)
    entry = publish.publish_run(run_dir, "demo", tmp_path, linear_epochs=1)
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo.lock", "demo"]
    assert isinstance(keras.models.load_model(entry / "encoder.keras"), byol_tf.ImageEncoder)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = train(*TINY, f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def copy_of(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns(".lock"))
    return copy


def test_an_export_deleted_or_emptied_after_the_run_is_made_again(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    saved_model = run_dir / "export" / "byol_encoder" / "1"
    shutil.rmtree(saved_model)
    saved_model.mkdir(parents=True)  # an empty version folder, as a crash could leave
    assert not export.is_complete(saved_model)
    rerun = train(*TINY, f"--run_dir={run_dir}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert export.is_complete(saved_model)
    loaded = tf.saved_model.load(str(saved_model))
    assert loaded.signatures["serving_default"](
        images=tf.zeros((1, 32, 32, 3), tf.uint8))["embedding"].shape == (1, 128)


def test_records_that_no_longer_match_the_run_are_redone(finished_run, tmp_path):
    """A kNN record edited since the run wrote it, and a SavedModel whose saved_model.pb was
    damaged (still "all files present"): the rerun redoes both phases."""
    run_dir = copy_of(finished_run, tmp_path)
    phases = json.loads((run_dir / "phases.json").read_text())
    measured = phases["evaluate"]["knn"]["pretrained"]
    phases["evaluate"]["knn"]["pretrained"] = 0.99
    (run_dir / "phases.json").write_text(json.dumps(phases))
    graph = run_dir / "export" / "byol_encoder" / "1" / "saved_model.pb"
    damaged = bytearray(graph.read_bytes())
    damaged[len(damaged) // 2:] = b"\0" * (len(damaged) - len(damaged) // 2)
    graph.write_bytes(bytes(damaged))
    assert not export.is_complete(graph.parent)  # (it no longer loads)
    rerun = train(*TINY, f"--run_dir={run_dir}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "the record of the evaluate phase is edited since it was written" in rerun.stderr
    redone = json.loads((run_dir / "phases.json").read_text())
    assert redone["evaluate"]["knn"]["pretrained"] == measured
    assert json.loads((run_dir / "metrics.json").read_text())["knn"]["pretrained"] == measured
    assert export.is_complete(graph.parent, redone["export"]["sha256"])
    served = tf.saved_model.load(str(graph.parent)).signatures["serving_default"]
    assert served(images=tf.zeros((1, 32, 32, 3), tf.uint8))["embedding"].shape == (1, 128)


def test_eval_py_refuses_a_run_file_changed_since_the_run_saved_it(finished_run, tmp_path):
    from helpers.commands import evaluate

    run_dir = copy_of(finished_run, tmp_path)
    shutil.copyfile(run_dir / "byol.keras", run_dir / "encoder.keras")  # another model
    result = evaluate(f"--model={run_dir / 'encoder.keras'}", "--dataset=sample",
                      "--mode=knn", "--max_examples=50")
    assert result.returncode == 2, result.stderr[-2000:]
    assert (f"--model: {run_dir / 'encoder.keras'} changed since its run saved it"
            in last_line(result.stderr))


def test_a_finished_run_without_config_json_is_refused_not_rewritten(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    (run_dir / "config.json").unlink()
    rerun = train(*TINY, "--base_lr=0.7", f"--run_dir={run_dir}")
    assert rerun.returncode == 2
    assert f"{run_dir / 'config.json'} is missing from a run folder" in last_line(rerun.stderr)
    assert not (run_dir / "config.json").exists()


@pytest.mark.parametrize("damage", ["{truncated", "[1, 2]", '{"train": 3}'])
def test_a_damaged_phases_record_is_named(tmp_path, damage):
    run = runs.RunFolder(tmp_path / "run")
    run.start(config_stand_in(epochs=1), ["train.py"], {})
    (run.path / "phases.json").write_text(damage)
    with pytest.raises(ValueError, match=rf"{run.path / 'phases.json'} is damaged"):
        run.phases()


def labelled_folder(root, classes, per_class=4, seed=0, truncate=None):
    rng = np.random.default_rng(seed)
    for label in classes:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)
            (root / label / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    if truncate:
        path = root / truncate
        path.write_bytes(path.read_bytes()[:100])
    return root


def test_an_evaluation_that_cannot_mean_anything_is_refused_before_training(tmp_path):
    """A test folder with other classes, the training folder itself, or a folder of one class
    (which scores every prediction right): refused in one line (train.py: exit 2, nothing
    written)."""
    from byol_tf import data

    train_folder = labelled_folder(tmp_path / "train", ["cat", "dog"])
    test_folder = labelled_folder(tmp_path / "val", ["cat", "bird"])
    result = train(f"--dataset={train_folder}", f"--eval_dataset={test_folder}",
                   "--image_size=32", "--batch_size=4", f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    line = last_line(result.stderr)
    assert "same class sub-folders" in line and "['bird']" in line and "['dog']" in line
    assert not (tmp_path / "run").exists()
    one = labelled_folder(tmp_path / "one", ["cat"])
    for folder, eval_folder, words in (
            (train_folder, train_folder, f"eval_folder={train_folder} is the folder"),
            (one, labelled_folder(tmp_path / "one_val", ["cat"]),
             "has 1 class sub-folder(s) (cat): an evaluation needs two or more")):
        with pytest.raises(data.DataError, match=re.escape(words)) as refused:
            data.Source.of(str(folder), eval_folder=str(eval_folder)).check_eval_folder()
        assert "\n" not in str(refused.value)


def test_skip_bad_images_holds_in_the_evaluation_and_in_eval_py(tmp_path):
    """A truncated image in the test folder: the run (training, kNN) and eval.py finish with
    --skip_bad_images, leaving it out; without the flag eval.py names it."""
    train_folder = labelled_folder(tmp_path / "train", ["a", "b"], per_class=8)
    test_folder = labelled_folder(tmp_path / "val", ["a", "b"], seed=1, truncate="b/2.png")
    run_dir = tmp_path / "run"
    result = train(f"--dataset={train_folder}", f"--eval_dataset={test_folder}",
                   "--image_size=32", "--batch_size=4", "--epochs=1", "--hidden_dim=32",
                   "--projection_dim=16", "--noknn_random_init", "--skip_bad_images",
                   f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    knn = json.loads((run_dir / "metrics.json").read_text())["knn"]
    assert knn["train_examples"] == 16 and knn["test_examples"] == 7
    command = [sys.executable, str(ROOT / "eval.py"), f"--model={run_dir / 'encoder.keras'}",
               f"--dataset={train_folder}", f"--eval_dataset={test_folder}"]
    refused = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "2.png" in refused.stderr
    done = subprocess.run([*command, "--skip_bad_images", f"--out={tmp_path / 'knn.json'}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "knn.json").read_text())["test_examples"] == 7


def test_diverging_training_stops_keeps_nothing_diverged_and_never_publishes(tmp_path):
    run_dir = tmp_path / "run"
    result = train("--epochs=3", "--steps_per_epoch=3", "--batch_size=32", "--hidden_dim=32",
                   "--projection_dim=16", "--optimizer=sgd", "--base_lr=1e6",
                   "--warmup_epochs=0", "--noknn_random_init", "--max_eval_examples=100",
                   "--publish=diverged", f"--run_dir={run_dir}")
    assert result.returncode == 1, result.stderr[-3000:]
    line = last_line(result.stderr)
    assert line.startswith("train.py: error: training diverged at step ") and "--base_lr" in line
    assert "train" not in runs.RunFolder(run_dir).phases()
    assert not (run_dir / "zoo").exists() and not (run_dir / "encoder.keras").exists()
    # Every checkpoint kept holds finite weights.
    import h5py

    for checkpoint in (run_dir / "checkpoints").glob("ckpt-*.weights.h5"):
        with h5py.File(checkpoint) as f:
            arrays = []
            f.visititems(lambda name, item, found=arrays: found.append(item[()])
                         if isinstance(item, h5py.Dataset) else None)
        assert all(np.all(np.isfinite(a)) for a in arrays if np.issubdtype(a.dtype, np.floating))


@pytest.mark.parametrize("damage", ["missing key", "a list", "edited state", "another model"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, tiny_byol, damage):
    from byol_tf.training.checkpoints import CheckpointManager

    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    model, manager, saved = tiny_byol(total_steps=10), CheckpointManager(tmp_path), {}
    for step in (1, 2):
        model.fit(x, batch_size=8, verbose=0)
        manager.save(model, step, state={"history": [step]})
        saved[step] = [w.numpy().copy() for w in model.weights]
    newest = tmp_path / "ckpt-2.json"
    manifest = json.loads(newest.read_text())
    if damage == "missing key":
        del manifest["sha256"]
        newest.write_text(json.dumps(manifest))
    elif damage == "a list":
        newest.write_text(json.dumps([manifest]))
    elif damage == "edited state":
        manifest["state"] = {"history": [99]}
        newest.write_text(json.dumps(manifest))
    else:  # a checkpoint another model wrote, with a manifest that verifies
        other = tiny_byol(total_steps=10, projection_dim=8)
        other.fit(x, batch_size=8, verbose=0)
        CheckpointManager(tmp_path / "other").save(other, 2)
        for suffix in (".json", ".weights.h5"):
            shutil.copy(tmp_path / "other" / f"ckpt-2{suffix}", tmp_path / f"ckpt-2{suffix}")
    fresh = tiny_byol(total_steps=10)
    assert manager.restore(fresh) == 1 and manager.state == {"history": [1]}
    for got, want in zip(fresh.weights, saved[1]):
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("size", ["3m", "8m", "10m"])  # full at the checkpoint, save, export
def test_a_full_disk_is_one_clear_error_and_a_rerun_with_space_finishes(tmp_path, size):
    """train.py with its run folder on a small tmpfs: exit status 1 and one line naming the
    path (never a crash inside HDF5), no partial file left; with space, the same command
    finishes the run."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode()[:200]}")
    try:
        args = [*TINY, "--noknn", f"--run_dir={disk / 'run'}"]
        full = train(*args)
        assert full.returncode == 1, full.stderr[-3000:]
        line = last_line(full.stderr)
        assert line.startswith("train.py: error: ") and "space" in line and str(disk) in line
        assert not list(disk.rglob("*partial*"))
        subprocess.run(["mount", "-o", "remount,size=400m", str(disk)], check=True)
        finished = train(*args)
        assert finished.returncode == 0, finished.stderr[-3000:]
        assert export.is_complete(disk / "run" / "export" / "byol_encoder" / "1")
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_what_a_killed_writer_left_is_removed_by_the_next_run(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    left = [run_dir / "export" / "byol_encoder" / ".1.partial-99999" / "variables",
            run_dir / "checkpoints" / ".ckpt-9.partial-99999.weights.h5",
            run_dir / ".metrics.partial-99999.json"]
    left[0].mkdir(parents=True)
    for path in left[1:]:
        path.write_bytes(b"half")
    rerun = train(*TINY, f"--run_dir={run_dir}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(run_dir.rglob("*partial*"))
    assert export.is_complete(run_dir / "export" / "byol_encoder" / "1")


def test_an_image_over_the_pixel_limit_is_named_before_decoding_or_skipped(tmp_path):
    folder = labelled_folder(tmp_path / "train", ["a", "b"], per_class=8)
    huge = np.full((1000, 1200, 3), 90, np.uint8)  # 1.2 M pixels, a few KB as a PNG
    (folder / "a" / "huge.png").write_bytes(tf.io.encode_png(huge).numpy())
    args = [f"--dataset={folder}", "--noknn", "--image_size=32", "--batch_size=4", "--epochs=1",
            "--hidden_dim=32", "--projection_dim=16", "--max_image_pixels=1000000"]
    refused = train(*args, f"--run_dir={tmp_path / 'refused'}")
    assert refused.returncode == 2
    line = last_line(refused.stderr)
    assert "huge.png: 1200 × 1000 = 1,200,000 pixels, over the limit of 1,000,000" in line
    assert "--skip_bad_images" in line
    skipped = train(*args, "--skip_bad_images", f"--run_dir={tmp_path / 'run'}")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["config"]["num_examples"] == 16


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", ".hidden", "a/b"])
def test_a_publish_name_that_leaves_the_zoo_is_refused_before_training(tmp_path, name):
    result = train(*TINY, f"--publish={name}", f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and f"--publish={name}: an entry name is" in \
        last_line(result.stderr)
    assert not (tmp_path / "run").exists() and not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("published") / "run"
    result = train(*TINY, "--publish=entry", "--publish_linear_epochs=1", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_a_damaged_saved_model_file_is_saved_again_from_the_final_checkpoint(published,
                                                                            tmp_path):
    import keras

    run_dir = copy_of(published, tmp_path)
    good = (run_dir / "encoder.keras").read_bytes()
    (run_dir / "encoder.keras").write_bytes(good[:len(good) // 2])  # truncated
    rerun = train(*TINY, "--publish=entry", "--publish_linear_epochs=1", f"--run_dir={run_dir}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "encoder.keras changed since the run saved it (sha256)" in rerun.stdout
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    again = keras.models.load_model(run_dir / "encoder.keras")
    reference = keras.models.load_model(published / "encoder.keras")
    np.testing.assert_allclose(again(x), reference(x), rtol=1e-5, atol=1e-6)


def test_a_recorded_zoo_entry_that_no_longer_verifies_is_published_again(published, tmp_path):
    from byol_tf import zoo

    run_dir = copy_of(published, tmp_path)
    card = json.loads((run_dir / "zoo" / "entry" / "model_card.json").read_text())
    (run_dir / "zoo" / "entry" / "encoder.keras").write_bytes(b"tampered")
    rerun = train(*TINY, "--publish=entry", "--publish_linear_epochs=1", f"--run_dir={run_dir}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "does not verify" in rerun.stdout
    zoo.verified_files("entry", run_dir / "zoo")
    assert zoo.info("entry", run_dir / "zoo")["pretraining"]["run_id"] == card["pretraining"]["run_id"]
