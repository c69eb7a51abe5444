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
    assert set(errors) == {"rank3", "one_channel", "float", "garbage_bytes", "encoded_rank0",
                           "encoded_rank2"}
    assert not any(v == "accepted" for v in errors.values()), errors
    assert "InvalidArgumentError" in errors["garbage_bytes"]
    assert "encoded[1] is not a JPEG, PNG, GIF or BMP image" in errors["garbage_bytes"]
    assert "3 channels" in errors["one_channel"] or "shape" in errors["one_channel"]
    # A request of another rank fails with an InvalidArgumentError (a 400 from TF Serving)
    # that says what is wrong, not a crash.
    assert "InvalidArgumentError" in errors["rank3"]
    assert "images must have rank 4 [batch, height, width, 3]" in errors["rank3"]
    for rank in ("encoded_rank0", "encoded_rank2"):
        assert "InvalidArgumentError" in errors[rank], errors[rank]
        assert "encoded must have rank 1 [batch]" in errors[rank], errors[rank]


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
    """Wherever the file states its size: a JPEG's frame header after 100 KB of comments, a
    GIF frame larger than its logical screen."""
    from helpers.gif import gif_bytes
    from helpers.hostile import far_frame_jpeg, oversized_frame_gif

    model, _, images = exported
    path = export.export_encoder(model.image_encoder(), tmp_path / "limited" / "1",
                                 max_image_pixels=1000)
    serve = tf.saved_model.load(str(path)).signatures
    small, large = np.zeros((25, 40, 3), np.uint8), np.zeros((26, 40, 3), np.uint8)  # 1000, 1040
    encoders = {"png": tf.io.encode_png, "jpeg": tf.io.encode_jpeg, "jpeg_far_frame": far_frame_jpeg,
                "gif_frame_beyond_screen": lambda x: gif_bytes((1, 1), [(0, 0, x[..., 0])])}
    for name, encode in encoders.items():
        ok = serve["serve_encoded"](encoded=tf.stack([encode(small)]))["embedding"]
        assert ok.shape == (1, 128), name
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"encoded\[1\] has 1040 pixels, over the limit of 1000"):
            serve["serve_encoded"](encoded=tf.stack([encode(small), encode(large)]))
    with pytest.raises(tf.errors.InvalidArgumentError,  # (a few hundred bytes, never decoded)
                       match=r"encoded\[0\] has 256000000 pixels, over the limit of 1000"):
        serve["serve_encoded"](encoded=tf.constant([oversized_frame_gif(16_000, 16_000)]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="an empty batch"):
        serve["serve_encoded"](encoded=tf.constant([], tf.string))
    with pytest.raises(tf.errors.InvalidArgumentError, match="an empty batch"):
        serve["serving_default"](images=tf.zeros((0, 32, 32, 3), tf.uint8))


def test_stated_sizes_are_what_the_decoder_holds_for_every_format(tmp_path):
    """The pixels read from a file's bytes without decoding, in Python (folders) and in the
    serving graph, are those of the decoded image: PNG, JPEG (100 KB of comments before its
    frame header), GIF (one frame; frames beside and beyond a small logical screen: the
    canvas that holds them, or all frames together when more) and BMP (both orientations)."""
    import io

    from byol_tf.data import folders
    from helpers.gif import gif_bytes
    from helpers.hostile import far_frame_jpeg, many_frames_gif

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    grey = image[..., 0]

    def bmp(height):
        return (b"BM" + b"\0" * 16 + (53).to_bytes(4, "little") +
                height.to_bytes(4, "little", signed=True) + b"\0" * 20)

    cases = {  # name: (bytes, (width, height, pixels) by construction)
        "png": (tf.io.encode_png(image).numpy(), (53, 37, 1961)),
        "jpeg": (tf.io.encode_jpeg(image).numpy(), (53, 37, 1961)),
        "jpeg_far_frame": (far_frame_jpeg(image), (53, 37, 1961)),
        "gif": (gif_bytes((53, 37), [(0, 0, grey)]), (53, 37, 1961)),
        "gif_frame_beyond_screen": (gif_bytes((10, 10), [(4, 2, grey)]), (57, 39, 57 * 39)),
        "gif_two_frames": (gif_bytes((53, 37), [(0, 0, grey), (3, 4, grey[:10, :20])]),
                           (53, 37, 1961 + 200)),
        "gif_40_frames": (many_frames_gif(40, 64), (64, 64, 40 * 64 * 64)),
        "bmp": (bmp(37), (53, 37, 1961)), "bmp_top_down": (bmp(-37), (53, 37, 1961)),
    }
    for name, (content, expected) in cases.items():
        assert folders.image_extent(io.BytesIO(content)) == expected, name
        assert int(export._decoded_pixels(tf, tf.constant(content))) == expected[2], name
        if not name.startswith("bmp"):  # (the BMPs are headers only)
            decoded = tf.io.decode_image(content, channels=3, expand_animations=False)
            assert decoded.shape[0] * decoded.shape[1] <= expected[2], name
            assert decoded.shape[:2] == (37, 53) or not name.startswith(("png", "jpeg")), name
    (tmp_path / "c.jpg").write_bytes(cases["jpeg_far_frame"][0])
    problem = folders.image_file_problem(tmp_path / "c.jpg", max_image_pixels=53 * 37 - 1)
    assert problem == "53 × 37 = 1,961 pixels, over the limit of 1,960 (max_image_pixels)"
    assert folders.image_file_problem(tmp_path / "c.jpg", max_image_pixels=53 * 37) is None
