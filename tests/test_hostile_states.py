"""States that lie or were cut short: links where byol_tf writes or reads, a zoo entry named
outside its zoo, a publish killed between its renames or racing another run's, run records of
another run or edited since, a run folder that holds another run. One test per kind."""

import json
import os
import shutil

import numpy as np
import pytest

import byol_tf
from byol_tf import files, hub, zoo
from byol_tf.training import publish
from byol_tf.training.run_folder import RunFolder
from helpers.models import config_stand_in


@pytest.fixture(scope="module")
def entry_root(tmp_path_factory):
    """A zoo with one entry of a tiny untrained encoder, published by "run A"."""
    root = tmp_path_factory.mktemp("zoo")
    encoder = byol_tf.ImageEncoder(byol_tf.encoders.get("tiny_resnet_cifar",
                                                        input_shape=(32, 32, 3)),
                                   byol_tf.ImageConverter(image_size=32))
    card = dict(architecture="tiny_resnet_cifar", image_size=32, dataset="none",
                pretraining=dict(run_id="run-A", epochs=0, batch_size=1, recipe={},
                                 method="byol", command="none"),
                results=dict(knn_top1=0.0, knn_protocol="none", linear_top1=0.0,
                             linear_protocol="none", train_examples=0, test_examples=0,
                             command="none"))
    publish.publish(encoder, card, "entry", root)
    return root, encoder, card


def copy_zoo(entry_root, tmp_path):
    root = tmp_path / "zoo"
    shutil.copytree(entry_root[0], root, symlinks=True)
    return root


def test_no_file_is_written_or_read_through_a_link(entry_root, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(victim)  # a run folder that arrives with a link as its lock
    with pytest.raises(files.LockedError, match=r"\.lock is a symbolic link"):
        RunFolder(run).lock()
    root = copy_zoo(entry_root, tmp_path)
    (root / ".entry.lock").unlink(missing_ok=True)
    (root / ".entry.lock").symlink_to(victim)
    with pytest.raises(files.LockedError, match="is a symbolic link"):
        publish.publish(entry_root[1], entry_root[2], "entry", root, overwrite=True)
    assert victim.read_text() == "keep me"

    # A file:// handle whose encoder.keras is a link out of the entry: refused, not copied.
    linked = tmp_path / "linked_entry"
    shutil.copytree(root / "entry", linked)
    outside = tmp_path / "outside.keras"
    (linked / "encoder.keras").rename(outside)
    (linked / "encoder.keras").symlink_to(outside)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BYOL_TF_CACHE", str(tmp_path / "cache"))
        with pytest.raises(ValueError, match="encoder.keras is a link"):
            zoo.load(f"file://{linked}")
        with pytest.raises(ValueError, match="encoder.keras is a link"):
            zoo.load(str(linked))
    assert not list((tmp_path / "cache").rglob("encoder.keras"))

    # A card naming an unknown source kind does not switch the checks off.
    card = json.loads((root / "entry" / zoo.CARD).read_text())
    card["source"] = {"kind": "anything"}
    (root / "entry" / zoo.CARD).write_text(json.dumps(card))
    with pytest.raises(ValueError, match="names an unknown source"):
        zoo.load("entry", root=root)

    # Names that leave the zoo.
    for name in ("../../elsewhere", "/tmp", ".hidden"):
        with pytest.raises(ValueError, match="an entry name is letters"):
            zoo.info(name, root=root)
        with pytest.raises(ValueError, match="an entry name is letters"):
            zoo.load(name, root=root)


def test_a_publish_cut_short_at_any_instant_leaves_an_entry_that_loads(entry_root, tmp_path):
    """The two renames of a replacing publish: entry → .entry.replaced, staging → entry. A kill
    between them leaves no entry: the next load (or publish) puts the old one back; a kill
    after the second leaves the new entry, and the next publish clears the old."""
    root = copy_zoo(entry_root, tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    expected = np.asarray(entry_root[1](images))
    os.rename(root / "entry", hub.replaced_name(root / "entry"))  # killed between the renames
    assert zoo.info("entry", root)["name"] == "entry"  # (restored by the reader)
    np.testing.assert_allclose(np.asarray(zoo.load("entry", root=root)(images)), expected,
                               atol=1e-6)
    os.rename(root / "entry", hub.replaced_name(root / "entry"))
    publish.publish(entry_root[1], entry_root[2], "entry", root, overwrite=True)
    assert not hub.replaced_name(root / "entry").exists()
    np.testing.assert_allclose(np.asarray(zoo.load("entry", root=root)(images)), expected,
                               atol=1e-6)
    shutil.copytree(root / "entry", hub.replaced_name(root / "entry"))  # killed after both
    assert zoo.list(root) == ["entry"]
    publish.publish(entry_root[1], entry_root[2], "entry", root, overwrite=True)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".entry.")) == [
        ".entry.lock"]


def test_a_publish_replaces_only_the_entry_its_own_run_published(entry_root, tmp_path):
    root = copy_zoo(entry_root, tmp_path)
    before = (root / "entry" / zoo.CARD).read_text()
    with pytest.raises(FileExistsError, match="published by run run-A; choose another name"):
        publish.publish(entry_root[1], entry_root[2], "entry", root, replaces="run-B")
    assert (root / "entry" / zoo.CARD).read_text() == before
    card = dict(entry_root[2], dataset="again")
    publish.publish(entry_root[1], card, "entry", root, replaces="run-A")
    assert zoo.info("entry", root)["dataset"] == "again"


def test_run_records_of_another_run_or_edited_are_not_trusted(tmp_path):
    def run_folder(path, **config):
        folder = RunFolder(path)
        folder.start(config_stand_in(**config), ["train.py"], {})
        folder.finish("train", final_step=10, history={"loss": [1.0, 0.5]})
        folder.finish("save", files=["encoder.keras"], sha256={"encoder.keras": "0" * 64})
        return folder

    ours, theirs = run_folder(tmp_path / "ours", seed=0), run_folder(tmp_path / "theirs", seed=1)
    assert set(ours.phases()) == {"train", "save"}
    shutil.copyfile(theirs.phases_path, ours.phases_path)  # swapped in
    assert RunFolder(ours.path).phases() == {}
    phases = json.loads(theirs.phases_path.read_text())
    phases["save"]["sha256"]["encoder.keras"] = "1" * 64  # edited
    theirs.phases_path.write_text(json.dumps(phases))
    assert set(RunFolder(theirs.path).phases()) == {"train"}
    RunFolder(theirs.path).forget("train")
    assert RunFolder(theirs.path).phases() == {}
    legacy = {"train": {"final_step": 10, "seconds": 1.0}}  # (written by byol_tf 0.1.0)
    theirs.phases_path.write_text(json.dumps(legacy))
    assert RunFolder(theirs.path).phases() == legacy


def test_a_run_folder_is_its_own(tmp_path):
    """Not a file, the root or the home folder, nor a folder holding another run; and a run
    clears only what its own killed writers left."""
    inner = RunFolder(tmp_path / "outer" / "inner")
    inner.start(config_stand_in(seed=0), ["train.py"], {})
    inner.lock()
    (inner.path / "checkpoints").mkdir()
    theirs = inner.path / "checkpoints" / ".ckpt-4.partial-99999.weights.h5"
    theirs.write_text("another run's write in flight")
    with pytest.raises(ValueError, match="holds another run folder"):
        RunFolder(tmp_path / "outer").check_place()
    outer = RunFolder(tmp_path / "outer")
    outer.clear_leftovers()
    assert theirs.exists()
    for place, words in ((tmp_path / "outer" / "inner" / "config.json", "is a file"),
                         ("/", "the file system root"), (os.path.expanduser("~"), "the home")):
        with pytest.raises(ValueError, match=words):
            RunFolder(place).check_place()
    files.release_lock(inner.path / ".lock")


def test_a_run_that_never_trained_gives_way_to_the_corrected_command(tmp_path):
    """A run refused at its first batch (a truncated image, say) has written config.json alone:
    the command corrected as the error says (`--skip_bad_images`) starts there; once a
    checkpoint exists, another config is refused."""
    folder = RunFolder(tmp_path / "run")
    folder.start(config_stand_in(skip_bad_images=False), ["train.py"], {})
    RunFolder(folder.path).start(config_stand_in(skip_bad_images=True), ["train.py", "--skip"], {})
    assert RunFolder(folder.path).recorded_config() == {"skip_bad_images": True}
    (folder.path / "checkpoints").mkdir()
    (folder.path / "checkpoints" / "ckpt-3.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds a run with another config \(differs in "
                                         r"\['skip_bad_images'\]\)"):
        RunFolder(folder.path).start(config_stand_in(skip_bad_images=False), ["train.py"], {})


def test_one_bad_card_does_not_hide_the_zoo(entry_root, tmp_path):
    root = copy_zoo(entry_root, tmp_path)
    for name, text in (("deep", "[" * 100_000 + "]" * 100_000), ("html", "<html>oops</html>")):
        (root / name).mkdir()
        (root / name / zoo.CARD).write_text(text)
    assert zoo.list(root) == ["entry"]
    with pytest.raises(ValueError, match="nested too deeply"):
        zoo.info("deep", root)
