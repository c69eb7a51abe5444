"""SavedModel for TF Serving: called from a fresh TensorFlow-only process, both signatures
equal the Keras encoder; bad requests fail cleanly; saved_model_cli lists the signatures."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf
from byol_tf import data, export
from helpers.reference import reference_embedding

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = byol_tf.BYOL("tiny_resnet_cifar", projection_dim=16, hidden_dim=32, total_steps=10,
                         image_size=32)
    model.compile(optimizer=byol_tf.LARS(0.5))
    images = data.load_sample()["x_test"][:24]
    model.fit(images, batch_size=8, verbose=0)  # trained weights and BN statistics
    directory = tmp_path_factory.mktemp("export")
    path = export.export_encoder(model.image_encoder(), directory / "tiny" / "1")
    return model, path, images


def test_fresh_tensorflow_process_matches_keras(exported, tmp_path):
    model, path, images = exported
    # Exactly at the path given, and nothing else beside it (no temporary folder left).
    assert path.name == "1" and sorted(p.name for p in path.parent.iterdir()) == ["1"]
    encoded = np.array([tf.io.encode_png(image).numpy() for image in images], dtype=object)
    np.savez(tmp_path / "in.npz", images=images, encoded=encoded)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, str(ROOT / "tests/helpers/serve_check.py"), str(path),
                             str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    assert list(out["modules"]) == []  # byol_tf was never imported
    assert set(out["signatures"]) == {"serving_default", "serve_encoded"}
    expected = reference_embedding(model.online_encoder, images)
    assert out["from_images"].shape == (24, 128) and out["from_images"].dtype == np.float32
    np.testing.assert_allclose(out["from_images"], expected, atol=1e-5)
    np.testing.assert_allclose(out["from_bytes"], expected, atol=1e-5)  # PNG is lossless
    errors = dict(e.split(": ", 1) for e in out["errors"])
    assert set(errors) == {"rank3", "one_channel", "float", "garbage_bytes"}
    assert not any(v == "accepted" for v in errors.values()), errors
    assert "InvalidArgumentError" in errors["garbage_bytes"]
    assert "encoded[1] is not a JPEG, PNG, GIF or BMP image" in errors["garbage_bytes"]
    assert "3 channels" in errors["one_channel"] or "shape" in errors["one_channel"]
    # A request of another rank fails with an InvalidArgumentError (a 400 from TF Serving)
    # that says what is wrong, not a crash.
    assert "InvalidArgumentError" in errors["rank3"]
    assert "images must have rank 4 [batch, height, width, 3]" in errors["rank3"]


def test_resizes_other_sizes_and_any_batch(exported):
    model, path, images = exported
    loaded = tf.saved_model.load(str(path))
    big = tf.image.resize(images[:3], (64, 80), "nearest").numpy().astype(np.uint8)
    out = loaded.signatures["serving_default"](images=tf.constant(big))["embedding"].numpy()
    assert out.shape == (3, 128) and np.isfinite(out).all()
    one = loaded.signatures["serving_default"](images=tf.constant(images[:1]))["embedding"]
    assert one.shape == (1, 128)


def test_saved_model_cli_lists_signatures_and_versions_are_immutable(exported):
    model, path, _ = exported
    cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", str(path), "--all"],
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for expected in ("signature_def['serving_default']", "signature_def['serve_encoded']",
                     "dtype: DT_UINT8", "dtype: DT_STRING", "embedding"):
        assert expected in shown.stdout, expected
    with pytest.raises(FileExistsError, match="immutable"):
        export.export_encoder(model.image_encoder(), path)


def test_predict_request_matches_the_signatures(exported):
    """A TF Serving PredictRequest built from the signature's own metadata, executed the
    way the server does (request tensors → signature kwargs), gives the Keras embedding."""
    from tensorflow_serving.apis import predict_pb2

    model, path, images = exported
    loaded = tf.saved_model.load(str(path))
    for signature_name, payload in (("serving_default", images[:4]),
                                    ("serve_encoded", [tf.io.encode_png(i).numpy() for i in images[:4]])):
        signature = loaded.signatures[signature_name]
        (input_name, spec), = signature.structured_input_signature[1].items()
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tiny"
        request.model_spec.signature_name = signature_name
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(payload, dtype=spec.dtype))
        assert request.inputs[input_name].dtype == spec.dtype.as_datatype_enum
        assert list(signature.structured_outputs) == ["embedding"]
        served = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        np.testing.assert_allclose(served["embedding"].numpy(),
                                   reference_embedding(model.online_encoder, images[:4]),
                                   atol=1e-5)


def test_a_failed_export_leaves_nothing_behind(exported, tmp_path, monkeypatch):
    """The write fails midway (as on a full disk): no version folder appears, no partial
    folder is left for a later run or TF Serving to trust, and the error names the path."""
    model, _, _ = exported
    real_save = tf.saved_model.save

    def save_then_fail(module, directory, **kwargs):
        real_save(module, directory, **kwargs)  # a complete write ...
        raise OSError(28, "No space left on device")  # ... that fails at the end

    monkeypatch.setattr(tf.saved_model, "save", save_then_fail)
    target = tmp_path / "served" / "tiny" / "2"
    with pytest.raises(OSError, match=r"export to .*tiny/2 failed, nothing was written"):
        export.export_encoder(model.image_encoder(), target)
    assert list(target.parent.iterdir()) == []


def test_model_without_an_image_size_is_refused(tmp_path):
    encoder = keras.Sequential([keras.Input((None, None, 3)), keras.layers.GlobalAveragePooling2D()])
    free = byol_tf.ImageEncoder(encoder, byol_tf.ImageConverter(image_size=None))
    with pytest.raises(ValueError, match="image_size"):
        export.export_encoder(free, tmp_path / "m" / "1")


def test_serving_refuses_images_over_the_pixel_limit_before_decoding_and_empty_batches(
        exported, tmp_path):
    model, _, images = exported
    path = export.export_encoder(model.image_encoder(), tmp_path / "limited" / "1",
                                 max_image_pixels=1000)
    serve = tf.saved_model.load(str(path)).signatures
    small, large = np.zeros((25, 40, 3), np.uint8), np.zeros((26, 40, 3), np.uint8)  # 1000, 1040
    for encode in (tf.io.encode_png, tf.io.encode_jpeg):
        ok = serve["serve_encoded"](encoded=tf.stack([encode(small)]))["embedding"]
        assert ok.shape == (1, 128)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"encoded\[1\] has 1040 pixels, over the limit of 1000"):
            serve["serve_encoded"](encoded=tf.stack([encode(small), encode(large)]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="an empty batch"):
        serve["serve_encoded"](encoded=tf.constant([], tf.string))
    with pytest.raises(tf.errors.InvalidArgumentError, match="an empty batch"):
        serve["serving_default"](images=tf.zeros((0, 32, 32, 3), tf.uint8))


def test_header_sizes_match_the_decoded_images_for_every_format(tmp_path):
    """The size read from a file's first bytes (folders) is the decoded image's, for PNG,
    JPEG (with 20 KB of metadata before its frame header), GIF and BMP (both orientations)."""
    from byol_tf.data import folders

    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(image).numpy()
    app1 = b"\xff\xe1" + (20_002).to_bytes(2, "big") + b"\0" * 20_000  # a big EXIF segment
    gif = b"GIF89a" + (53).to_bytes(2, "little") + (37).to_bytes(2, "little") + b"\0" * 20

    def bmp(height):
        return (b"BM" + b"\0" * 16 + (53).to_bytes(4, "little") +
                height.to_bytes(4, "little", signed=True) + b"\0" * 20)

    files = {"a.png": tf.io.encode_png(image).numpy(), "b.jpg": jpeg,
             "c.jpg": jpeg[:2] + app1 + jpeg[2:], "d.gif": gif, "e.bmp": bmp(37), "f.bmp": bmp(-37)}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        with open(tmp_path / name, "rb") as f:
            head = f.read(4096)
            head += f.read(1 << 16) if folders.image_size_of(head) is None else b""
        assert folders.image_size_of(head) == (53, 37), name
    assert tf.io.decode_jpeg(jpeg[:2] + app1 + jpeg[2:]).shape == (37, 53, 3)
    problem = folders.image_file_problem(tmp_path / "c.jpg", max_image_pixels=53 * 37 - 1)
    assert problem == "53 × 37 = 1,961 pixels, over the limit of 1,960 (max_image_pixels)"
    assert folders.image_file_problem(tmp_path / "c.jpg", max_image_pixels=53 * 37) is None
