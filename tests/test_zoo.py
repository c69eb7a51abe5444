"""The zoo: publish → list/info/load, frozen features equal the original encoder,
tampered files refused, URL-backed files fetched and checked, fine-tuning works."""

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import byol_tf
from byol_tf import data, zoo
from byol_tf.training import publish
from helpers.reference import reference_embedding

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_publish_list_info_and_card(published_run):
    run_dir, root = published_run
    assert zoo.list(root) == ["tiny_sample"]
    card = zoo.info("tiny_sample", root)
    assert card["architecture"] == "tiny_resnet_cifar" and card["dataset"] == "sample"
    assert 0 <= card["results"]["knn_top1"] <= 1 and 0 <= card["results"]["linear_top1"] <= 1
    entry = root / "tiny_sample"
    on_disk = {str(p.relative_to(entry)) for p in entry.rglob("*") if p.is_file()}
    assert set(card["files"]) == on_disk - {"model_card.json", "README.md"}
    assert "saved_model/saved_model.pb" in card["files"] and "encoder.keras" in card["files"]
    assert "kNN" in (entry / "README.md").read_text()
    with pytest.raises(ValueError, match="No zoo entry 'nope'"):
        zoo.info("nope", root)
    with pytest.raises(FileExistsError):
        publish.publish_run(run_dir, "tiny_sample", root=root)


def test_loaded_frozen_features_equal_the_original_encoder(published_run):
    run_dir, root = published_run
    images = data.load_sample()["x_test"][:16]
    original = keras.models.load_model(run_dir / "encoder.keras")
    loaded = zoo.load("tiny_sample", root=root)
    assert isinstance(loaded, byol_tf.ImageEncoder) and loaded.trainable_weights == []
    np.testing.assert_allclose(np.asarray(loaded(images)),
                               reference_embedding(original.encoder, images), atol=1e-5)


def test_tampered_file_is_refused(published_run, tmp_path):
    _, root = published_run
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    variables = next((copy / "tiny_sample" / "saved_model" / "variables").glob("*.data-*"))
    blob = bytearray(variables.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    variables.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="tampered"):
        zoo.load("tiny_sample", root=copy)


def test_fine_tune_a_zoo_encoder(published_run):
    _, root = published_run
    sample = data.load_sample()
    encoder = zoo.load("tiny_sample", trainable=True, root=root)
    assert encoder.trainable_weights
    start = [w.numpy().copy() for w in encoder.trainable_weights]
    images = keras.Input((32, 32, 3), dtype="uint8")
    model = keras.Model(images, keras.layers.Dense(10)(encoder(images)))
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(sample["x_train"][:256], sample["y_train"][:256].astype(np.int64),
                        batch_size=64, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    moved = max(float(np.abs(w.numpy() - s).max()) for w, s in zip(encoder.trainable_weights, start))
    assert moved > 0, "fine-tuning must update the encoder"


def test_committed_entries_load():
    names = zoo.list()
    assert names, "models/ has no published entry"
    images = data.load_sample()["x_test"][:4]
    for name in names:
        card = zoo.info(name)
        if "source" in card:  # imported: points at a file this machine cannot fetch
            assert card["source"]["url"].startswith("https://") and not card["files"]
            assert card["convert"].startswith("byol-convert --checkpoint=")
            continue  # loading one is tested with a local URL in test_convert.py
        out = np.asarray(zoo.load(name)(images))
        assert out.shape == (4, card["representation_dim"]) and np.isfinite(out).all()


@pytest.mark.slow
def test_the_cifar10_entry_reproduces_its_cards_knn(cifar10_dir):
    """The committed weights are the ones measured: the entry's kNN top-1 on the 10,000
    CIFAR-10 test images (its card: measured at publish) comes out again from zoo.load."""
    from byol_tf import evaluation

    card = zoo.info("byol_tiny_resnet_cifar10")
    cifar = np.load(cifar10_dir / "cifar10.npz")
    top1 = evaluation.knn_accuracy(zoo.load("byol_tiny_resnet_cifar10"), cifar["x_train"],
                                   cifar["y_train"], cifar["x_test"], cifar["y_test"], k=200)
    assert card["results"]["test_examples"] == len(cifar["x_test"]) == 10_000
    assert abs(top1 - card["results"]["knn_top1"]) <= 2e-4  # 2 test images of 10,000


def test_overwrite_keeps_the_old_entry_until_the_new_one_is_complete(published_run, tmp_path,
                                                                      monkeypatch):
    run_dir, root = published_run
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()
              and not p.relative_to(copy).parts[0].startswith(".")}  # (not the entry's lock)
    from byol_tf import evaluation

    def failing_eval(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(evaluation, "supervised_eval", failing_eval)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        publish.publish_run(run_dir, "tiny_sample", root=copy, linear_epochs=1, overwrite=True)
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()
             and not p.relative_to(copy).parts[0].startswith(".")}
    assert after == before  # the old entry, untouched
    assert zoo.list(copy) == ["tiny_sample"]  # a left-over staging folder is not an entry
    zoo.load("tiny_sample", root=copy)

    monkeypatch.undo()
    publish.publish_run(run_dir, "tiny_sample", root=copy, linear_epochs=1, overwrite=True)
    assert sorted(p.name for p in copy.iterdir()) == [".tiny_sample.lock", "tiny_sample"]
    assert zoo.info("tiny_sample", copy)["date"] and zoo.load("tiny_sample", root=copy)


def test_publish_reuses_the_knn_train_py_measured_on_the_same_examples(published_run, tmp_path):
    run_dir, _ = published_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    recorded = dict(pretrained=0.123, random_init=0.1, k=200, temperature=0.1,
                    train_examples=2000, test_examples=500)
    (copy / "metrics.json").write_text(json.dumps({"knn": recorded}))
    publish.publish_run(copy, "reused", root=tmp_path / "zoo", linear_epochs=1)
    assert zoo.info("reused", tmp_path / "zoo")["results"]["knn_top1"] == 0.123
    # Measured on other examples (train.py --max_eval_examples): measured again.
    (copy / "metrics.json").write_text(json.dumps({"knn": dict(recorded, test_examples=400)}))
    publish.publish_run(copy, "measured", root=tmp_path / "zoo", linear_epochs=1)
    assert zoo.info("measured", tmp_path / "zoo")["results"]["knn_top1"] != 0.123


@pytest.mark.parametrize("text,message", [("{not json", "not valid JSON"),
                                          ("[1, 2]", "not a model card")])
def test_a_broken_card_is_named_and_not_listed(published_run, tmp_path, text, message):
    _, root = published_run
    copy = tmp_path / "models"
    shutil.copytree(root, copy)
    shutil.copytree(copy / "tiny_sample", copy / "broken")
    (copy / "broken" / "model_card.json").write_text(text)
    with pytest.raises(ValueError, match=f"zoo entry 'broken': .*model_card.json is {message}"):
        zoo.info("broken", copy)
    assert zoo.list(copy) == ["tiny_sample"]


def test_the_zoo_command_helps_lists_rounded_and_a_fetch_that_fetched_nothing_fails(
        capsys, monkeypatch, tmp_path):
    from byol_tf import hub
    from byol_tf.cli import zoo as zoo_cli

    assert zoo_cli.main(["--help"]) == 0 and "byol-zoo list" in capsys.readouterr().out
    assert zoo_cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    tiny = next(line for line in listed.splitlines() if line.startswith("byol_tiny_resnet_cifar10\t"))
    linear = hub.registry()["byol_tiny_resnet_cifar10"]["results"]["linear_top1"]
    assert f"linear_top1 {linear:.4f}" in tiny and str(linear) not in tiny

    def unreachable(url, dest, sha256, handle):
        raise OSError(f"could not fetch {url} for the zoo handle {handle}: no network")

    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "fetch", unreachable)
    assert zoo_cli.main(["fetch", "byol_deepmind_res50x1"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("byol-zoo: could not fetch https://") and "\n" not in error


def test_eval_py_takes_a_zoo_name_as_model(tmp_path):
    from helpers.commands import evaluate

    out = tmp_path / "knn.json"
    result = evaluate("--model=byol_tiny_resnet_cifar10_sample", "--dataset=sample",
                      "--max_examples=100", f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == "knn" and 0 <= metrics["top1"] <= 1
    assert metrics["test_examples"] == 100
    wrong = evaluate("--model=no_such_entry", "--dataset=sample")
    assert wrong.returncode == 2 and "--model: no zoo entry 'no_such_entry'" in wrong.stderr
