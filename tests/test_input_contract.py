"""One input contract: every entry point takes uint8 images of any size through the same
`ImageConverter` and gives the same embedding; eval.py scores a SimCLR model as its
exported SavedModel."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

import byol_tf
from byol_tf import evaluation, export, zoo

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def test_every_entry_point_gives_the_same_embedding(published_run, uint8_images):
    from byol_tf.image_encoder import load_image_encoder  # (what eval.py --model loads)

    run_dir, root = published_run
    odd = tf.image.resize(uint8_images[:6], (45, 38)).numpy().round().astype(np.uint8)
    whole_model = keras.models.load_model(run_dir / "byol.keras")
    saved_model = tf.saved_model.load(str(run_dir / "export" / "byol_encoder" / "1"))
    entry_points = {
        "train: the whole model": whole_model(odd),
        "train: encoder.keras": keras.models.load_model(run_dir / "encoder.keras")(odd),
        "eval.py --model": load_image_encoder(run_dir / "byol.keras")(odd),
        "evaluation.extract_features": evaluation.extract_features(whole_model, odd),
        "export: SavedModel": saved_model.signatures["serving_default"](
            images=tf.constant(odd))["embedding"],
        "zoo.load frozen": zoo.load("tiny_sample", root=root)(odd),
        "zoo.load trainable": zoo.load("tiny_sample", trainable=True, root=root)(odd),
    }
    # The independent expectation: crop 38×38 at offset (4, 0), antialiased bicubic resize
    # to 32, clip, ImageNet mean/std, then the raw encoder.
    crop = odd[:, 4:42].astype(np.float32) / 255.0
    x = np.clip(tf.image.resize(crop, (32, 32), "bicubic", antialias=True).numpy(), 0, 1)
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    expected = np.asarray(whole_model.online_encoder(x.astype(np.float32), training=False))
    assert np.abs(expected).max() > 1e-3
    for name, embedding in entry_points.items():
        np.testing.assert_allclose(np.asarray(embedding), expected, atol=1e-5, err_msg=name)


def test_eval_py_scores_a_simclr_model_as_its_saved_model(tmp_path, uint8_images):
    from byol_tf import data

    keras.utils.set_random_seed(0)
    model = byol_tf.SimCLR("tiny_resnet_cifar", projection_dim=16, hidden_dim=32, image_size=32,
                           seed=0)
    model.compile(optimizer=byol_tf.LARS(0.3))
    model.fit(uint8_images, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "simclr.keras")
    saved = export.export_encoder(model.image_encoder(), tmp_path / "export" / "simclr" / "1")

    out = tmp_path / "knn.json"
    result = subprocess.run([sys.executable, str(ROOT / "eval.py"), f"--model={tmp_path / 'simclr.keras'}",
                             "--mode=knn", "--max_examples=300", f"--out={out}"],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(out.read_text())

    x_train, y_train, x_test, y_test = data.load_arrays("sample", max_train=300, max_test=300)
    serving = tf.saved_model.load(str(saved)).signatures["serving_default"]

    def features(images):
        return np.concatenate([serving(images=tf.constant(images[i:i + 100]))["embedding"].numpy()
                               for i in range(0, len(images), 100)])

    votes = evaluation.knn_votes(features(x_train), y_train.astype(np.int64), features(x_test), 10)
    assert evaluated["top1"] == float(np.mean(votes.argmax(1) == y_test))
    assert evaluated["test_examples"] == 300
