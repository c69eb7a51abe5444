"""eval.py's modes on a small real CIFAR-10 subset, and the protocols' building blocks."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import byol_tf
from byol_tf import evaluation

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("enc") / "encoder.keras"
    byol_tf.encoders.get("tiny_resnet_cifar").save(path)
    return path


def test_eval_py_documents_every_mode():
    shown = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--help"], capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    for mode in ("knn", "linear", "finetune", "semi"):
        assert mode in shown.stdout


@pytest.mark.parametrize("mode,extra", [("linear", ["--epochs=2"]), ("finetune", ["--epochs=1"]),
                                        pytest.param("semi", ["--epochs=2", "--label_fraction=0.1"],
                                                     marks=pytest.mark.slow)])
def test_eval_py_modes_on_real_cifar10(encoder_file, cifar10_dir, tmp_path, mode, extra):
    out = tmp_path / f"{mode}.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"--model={encoder_file}", f"--mode={mode}",
         "--dataset=cifar10", f"--data_dir={cifar10_dir / 'tfds'}", "--max_examples=600",
         "--batch_size=100", f"--out={out}", *extra],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == mode and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert metrics["test_examples"] == 600 and {"tensorflow", "keras"} <= set(metrics["versions"])
    # Progress: one line per epoch (not a terminal), each ending with its images per second.
    epochs = int(extra[0].split("=")[1])
    assert result.stdout.count("images_per_second: ") == epochs, result.stdout[-2000:]
    if mode == "semi":
        subset = json.loads(pathlib.Path(metrics["label_subset"]).read_text())
        assert len(subset["indices"]) == metrics["train_examples"] < 600


def test_eval_py_names_its_results_after_model_and_data_and_never_overwrites(encoder_file,
                                                                             tmp_path):
    import shutil

    models = tmp_path / "run"
    models.mkdir()
    for name in ("encoder.keras", "byol.keras"):  # two models of one run folder
        shutil.copyfile(encoder_file, models / name)

    def knn(model):
        result = subprocess.run(
            [sys.executable, str(ROOT / "eval.py"), f"--model={models / model}",
             "--max_examples=200"], capture_output=True, text=True, timeout=600,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert result.returncode == 0, result.stderr[-3000:]
        # kNN's feature extraction says how many images, how long and how fast.
        assert "features of 200 images: " in result.stdout and " images/s" in result.stdout
        return pathlib.Path(json.loads(result.stdout.strip().splitlines()[-1])["out"])

    first, second, again = knn("encoder.keras"), knn("byol.keras"), knn("encoder.keras")
    assert first.name == "eval_knn_encoder_on_sample.json"
    assert second.name == "eval_knn_byol_on_sample.json"
    assert again.name == "eval_knn_encoder_on_sample-2.json" and first.exists()
    recorded = json.loads(first.read_text())
    assert recorded["evaluated_on"] == "sample" and recorded["model"].endswith("encoder.keras")


def test_label_subset_is_balanced_fixed_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    a, b = evaluation.label_subset(labels, 0.1, seed=3), evaluation.label_subset(labels, 0.1, seed=3)
    np.testing.assert_array_equal(a, b)
    assert (np.bincount(labels[a]) == 10).all()
    assert not np.array_equal(a, evaluation.label_subset(labels, 0.1, seed=4))
    assert (np.bincount(labels[evaluation.label_subset(labels, 0.001)]) == 1).all()  # ≥ 1 a class
    with pytest.raises(ValueError, match="fraction"):
        evaluation.label_subset(labels, 0.0)


def test_linear_eval_learns_a_separable_task_and_leaves_the_encoder_frozen():
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.1, 0.9, (4, 3))
    labels = np.repeat(np.arange(4), 64)
    images = np.clip(colours[labels][:, None, None, :] + rng.normal(0, 0.03, (256, 32, 32, 3)), 0, 1)
    images = (images * 255).astype(np.uint8)
    keras.utils.set_random_seed(0)
    encoder = byol_tf.encoders.get("tiny_resnet_cifar")
    before = [w.copy() for w in encoder.get_weights()]
    result = evaluation.supervised_eval(encoder, images, labels, images[::4], labels[::4],
                                        protocol="linear", epochs=8, batch_size=64, base_lr=2.0)
    assert result["top1"] > 0.9, result
    for a, b in zip(before, encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="protocol"):
        evaluation.supervised_eval(encoder, images, labels, images, labels, protocol="probe")


def test_knn_every_scores_and_keeps_the_features_of_the_weights_it_measured():
    """Epochs 2 and 3 (of 3) are measured; after fit the kept features are those of the final
    weights, taken at the final step, and the last kNN point is their kNN (each recomputed
    here from the trained model)."""
    rng = np.random.default_rng(0)
    x_train, x_test = (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8) for n in (64, 32))
    y_train, y_test = rng.integers(0, 3, 64), rng.integers(0, 3, 32)
    keras.utils.set_random_seed(0)
    model = byol_tf.BYOL("tiny_resnet_cifar", projection_dim=16, hidden_dim=32, total_steps=6)
    model.compile(optimizer=byol_tf.LARS(0.1))
    measure = evaluation.KnnEvery((x_train, y_train, x_test, y_test), every=2, last_epoch=3, k=5)
    history = model.fit(x_train[:32], batch_size=16, epochs=3, callbacks=[measure], verbose=0)
    assert len(history.history["knn_top1"]) == 2  # epochs 2 and 3
    assert measure.features_step == int(model.optimizer.iterations) == 6
    want = [evaluation.extract_features(model.image_encoder(), x) for x in (x_train, x_test)]
    for got, expected in zip(measure.features, want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert history.history["knn_top1"][-1] == evaluation.knn_accuracy_of_features(
        want[0], y_train, want[1], y_test, k=5)


def test_centre_crop():
    small = np.zeros((2, 32, 32, 3), np.uint8)
    assert evaluation.centre_crop(small) is small
    big = np.zeros((1, 64, 64, 3), np.float32)
    big[:, 28:36, 28:36] = 1.0  # a bright centre survives; the border band is cut
    big[:, :2] = 0.5
    out = np.asarray(evaluation.centre_crop(big))
    assert out.shape == (1, 64, 64, 3) and out[0, 32, 32, 0] > 0.9 and out[0, 0, 32, 0] < 0.05


def test_eval_py_refuses_bad_input_with_a_clear_message(encoder_file, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "eval.py"), *args], capture_output=True,
                              text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))

    result = run(f"--model={encoder_file}", "--mode=linear", "--epochs=0")
    assert result.returncode != 0 and "--epochs must be ≥ 1" in result.stderr
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(encoder_file.read_bytes()[:1000])
    result = run(f"--model={truncated}")
    assert result.returncode != 0 and "truncated or corrupt" in result.stderr
    images = keras.Input((32, 32, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(images))
    classifier = keras.Model(images, keras.layers.Dense(10, activation="softmax", name="probs")(features))
    classifier.save(tmp_path / "classifier.keras")
    result = run(f"--model={tmp_path / 'classifier.keras'}")
    assert result.returncode != 0 and "a classifier, not an encoder" in result.stderr
    gray = keras.Input((32, 32, 1))
    gray_encoder = keras.Model(gray, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3)(gray)))
    gray_encoder.save(tmp_path / "gray.keras")
    result = run(f"--model={tmp_path / 'gray.keras'}")
    assert result.returncode != 0 and "cannot encode RGB images" in result.stderr
    assert "Traceback" not in result.stderr


def test_extract_features_is_each_models_own_forward_in_any_batch_split(uint8_images):
    """Batches that do not divide the images (the last is padded, then cut) give the model's
    own per-image outputs; a second model, or the first after its weights change, gets its
    own features (the traced forward kept for the last model is not reused wrongly)."""
    from byol_tf.image_encoder import ImageEncoder

    images = uint8_images[:11]
    keras.utils.set_random_seed(0)
    first, second = (ImageEncoder(byol_tf.encoders.get("tiny_resnet_cifar")) for _ in range(2))
    for model in (first, second, first):
        expected = np.asarray(model(images, training=False))
        for batch_size in (4, 11, 256):
            got = evaluation.extract_features(model, images, batch_size=batch_size)
            assert got.shape == expected.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    before = evaluation.extract_features(first, images, batch_size=4)
    kernel = first.encoder.trainable_weights[0]
    kernel.assign(kernel * 2.0)
    after = evaluation.extract_features(first, images, batch_size=4)
    np.testing.assert_allclose(after, np.asarray(first(images, training=False)), rtol=1e-5,
                               atol=1e-5)
    assert np.abs(after - before).max() > 1e-3
