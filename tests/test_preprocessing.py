"""The input contract: `ImageConverter` against independent numpy / tf.image computations,
its static and run-time-shape paths agree, `ImageEncoder` round-trips, and every kind of
model becomes an `ImageEncoder` the same way."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf
from byol_tf.image_encoder import ImageEncoder, as_image_encoder
from byol_tf.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImageConverter
from helpers.reference import normalised


def test_constants_are_imagenets():
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406) and IMAGENET_STD == (0.229, 0.224, 0.225)


def test_images_at_size_are_only_normalised(uint8_images):
    converter = ImageConverter(image_size=32)
    np.testing.assert_allclose(converter(uint8_images), normalised(uint8_images), atol=1e-6)
    floats = uint8_images.astype(np.float32) / 255.0
    np.testing.assert_allclose(converter(floats), normalised(uint8_images), atol=1e-6)
    # float64 stays float64 (float64 runs keep their precision).
    out64 = converter(uint8_images.astype(np.float64) / 255.0)
    assert keras.backend.standardize_dtype(out64.dtype) == "float64"
    np.testing.assert_allclose(out64, normalised(uint8_images), atol=1e-6)


@pytest.mark.parametrize("shape,fraction,antialias", [((40, 36), 1.0, True), ((64, 48), 0.875, False),
                                                      ((36, 40), 0.875, True), ((20, 24), 1.0, True)])
def test_crop_and_resize_match_tf_image(uint8_images, shape, fraction, antialias):
    """Central square crop (DeepMind's offsets, side int(fraction·min) in float32), bicubic
    resize to 32, clip to [0, 1], normalise — computed here with tf.image directly."""
    big = tf.image.resize(uint8_images[:6], shape, "nearest").numpy().astype(np.uint8)
    h, w = shape
    side = int(np.float32(fraction) * np.float32(min(h, w)))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    crop = big[:, top:top + side, left:left + side].astype(np.float32) / 255.0
    resized = tf.image.resize(crop, (32, 32), "bicubic", antialias=antialias).numpy()
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    expected = (np.clip(resized, 0, 1) - mean) / std
    converter = ImageConverter(32, crop_fraction=fraction, antialias=antialias)
    np.testing.assert_allclose(converter(big), expected, atol=1e-5)

    # Sizes known only at run time (a SavedModel signature) take the same path.
    dynamic = tf.function(converter.__call__, input_signature=[
        tf.TensorSpec((None, None, None, 3), tf.uint8)])
    np.testing.assert_allclose(dynamic(tf.constant(big)), expected, atol=1e-5)


def test_no_image_size_keeps_the_input_size(uint8_images):
    out = ImageConverter(image_size=None)(uint8_images[:2, :20, :28])
    assert tuple(out.shape) == (2, 20, 28, 3)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="crop_fraction"):
        ImageConverter(32, crop_fraction=0.0)
    with pytest.raises(ValueError, match="image_size"):
        ImageConverter(0)
    with pytest.raises(ValueError, match="mean and std"):
        ImageConverter(32, std=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="3 channels"):
        ImageConverter(32)(np.zeros((1, 32, 32, 1), np.uint8))
    with pytest.raises(ValueError, match="rank 4"):
        ImageConverter(32)(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="dtype"):
        ImageConverter(32)(np.zeros((1, 32, 32, 3), np.int32))


def test_converter_config_round_trip():
    converter = ImageConverter(224, crop_fraction=0.875, antialias=False, mean=(0.5, 0.5, 0.5),
                               std=(0.25, 0.25, 0.25), name="c")
    clone = ImageConverter.from_config(converter.get_config())
    assert clone.get_config() == converter.get_config()
    x = np.random.default_rng(0).integers(0, 256, (2, 300, 260, 3), dtype=np.uint8)
    np.testing.assert_array_equal(clone(x), converter(x))


def test_image_encoder_round_trip_and_any_size(tmp_path, tiny_byol, uint8_images):
    model = tiny_byol(image_size=32)
    image_encoder = model.image_encoder()
    assert isinstance(image_encoder, ImageEncoder) and image_encoder.image_size == 32
    assert image_encoder.encoder is model.online_encoder
    np.testing.assert_allclose(image_encoder(uint8_images[:4]), model(uint8_images[:4]), atol=1e-6)
    image_encoder.save(tmp_path / "e.keras")
    loaded = keras.models.load_model(tmp_path / "e.keras")
    assert isinstance(loaded, ImageEncoder) and loaded.get_config() == image_encoder.get_config()
    odd = tf.image.resize(uint8_images[:3], (45, 37)).numpy().astype(np.uint8)
    np.testing.assert_allclose(loaded(odd), image_encoder(odd), atol=1e-6)
    assert tuple(loaded(odd).shape) == (3, image_encoder.representation_dim)


@pytest.mark.parametrize("method", ["BYOL", "SimCLR", "MoCo", "MultiView"])
def test_every_method_gives_its_online_encoder_behind_one_converter(method, uint8_images):
    keras.utils.set_random_seed(0)
    kwargs = dict(projection_dim=8, hidden_dim=16)
    if method == "MoCo":
        kwargs["queue_size"] = 16
    model = getattr(byol_tf, method)("tiny_resnet_cifar", **kwargs)
    image_encoder = as_image_encoder(model)
    assert image_encoder.encoder is model.online_encoder
    # Normalised once: the raw encoder of the normalised images (the old double
    # normalisation of non-BYOL models would differ here).
    np.testing.assert_allclose(image_encoder(uint8_images[:4]),
                               model.online_encoder(normalised(uint8_images[:4])), atol=1e-5)


def test_plain_encoders_are_wrapped_and_classifiers_refused(uint8_images):
    encoder = byol_tf.encoders.get("tiny_resnet_cifar")
    wrapped = as_image_encoder(encoder, image_size=32)
    np.testing.assert_allclose(wrapped(uint8_images[:2]), encoder(normalised(uint8_images[:2])),
                               atol=1e-5)
    assert as_image_encoder(wrapped) is wrapped
    images = keras.Input((32, 32, 3))
    not_an_encoder = keras.Model(images, keras.layers.Conv2D(4, 3)(images))
    with pytest.raises(ValueError, match=r"output \[batch, dim\]"):
        as_image_encoder(not_an_encoder)
