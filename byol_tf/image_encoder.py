"""`ImageEncoder`: images of any size → embedding, the one model every entry point shares.

    ImageConverter (uint8 or [0, 1] floats, crop, resize, ImageNet mean/std) → encoder

It is what `train.py` saves as `encoder.keras`, what `byol_tf.export` turns into a
SavedModel, what a zoo entry stores and `byol_tf.zoo.load` returns (frozen or trainable),
what `byol_tf.evaluation` and `eval.py` call, and what `byol_tf.convert` produces.
"""

import pathlib

import keras

from byol_tf.preprocessing import ImageConverter


@keras.saving.register_keras_serializable(package="byol_tf")
class ImageEncoder(keras.Model):
    """`images [B, H, W, 3]` (uint8 or float in [0, 1], any size) → `embedding [B, D]`.

    Args:
      encoder: a built `keras.Model`, normalised images `[B, S, S, 3]` → `[B, D]`.
      converter: the `ImageConverter` in front of it. Defaults to one at the encoder's
        static input size (or the input's size if the encoder has none), ImageNet mean/std.
    """

    def __init__(self, encoder, converter=None, **kwargs):
        kwargs.setdefault("name", f"{encoder.name}_images")
        super().__init__(**kwargs)
        if not isinstance(encoder, keras.Model) or not encoder.built:
            raise ValueError("ImageEncoder needs a built keras.Model encoder (images → [B, D])")
        self.encoder = encoder
        self.converter = converter or ImageConverter(image_size=static_image_size(encoder))
        self.built = True

    @property
    def image_size(self):
        """Side of the images the encoder sees (None: the input's own size)."""
        return self.converter.image_size

    @property
    def representation_dim(self):
        return self.encoder.output_shape[-1]

    def call(self, images, training=False):
        return self.encoder(self.converter(images), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.representation_dim)

    @classmethod
    def from_preset(cls, preset, trainable=False):
        """A zoo entry by name or handle (`byol_tf.zoo`): a registered name, a folder, or an
        `https://`, `file://` or `gs://` URL of one, fetched into the verified cache.
        `trainable` sets whether fine-tuning moves the encoder's weights."""
        from byol_tf import hub, model_files

        entry = hub.resolve(str(preset))
        if hub.imported(entry.card):
            model = _converted_checkpoint(entry)
        else:
            model = as_image_encoder(model_files.load_model(entry.path("encoder.keras")),
                                     entry.card.get("image_size"))
        model.encoder.trainable = trainable
        return model

    def get_config(self):
        return {"encoder": keras.saving.serialize_keras_object(self.encoder),
                "converter": keras.saving.serialize_keras_object(self.converter),
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["converter"] = keras.saving.deserialize_keras_object(config["converter"])
        return cls(**config)


def static_image_size(encoder):
    """The encoder's square static input side, or None when its input size is free."""
    shape = getattr(encoder, "input_shape", None)
    if shape and len(shape) == 4 and shape[1] is not None and shape[1] == shape[2]:
        return int(shape[1])
    return None


def as_image_encoder(model, image_size=None):
    """Any saved or built model → an `ImageEncoder`:

    - an `ImageEncoder` is returned as it is;
    - a self-supervised model (`BYOL`, `SimCLR`, `MoCo`, `MultiView`) gives its online
      encoder behind its own converter (`model.image_encoder()`);
    - a plain Keras encoder is taken to expect ImageNet-normalised images and is put behind
      a default converter at `image_size` (default: its static input size).
    Raises ValueError for a model whose output is not `[B, D]` (e.g. a classifier's
    softmax is refused only by the caller, who knows the number of classes)."""
    if isinstance(model, ImageEncoder):
        return model
    if callable(getattr(model, "image_encoder", None)):  # a TwoViewModel
        return model.image_encoder()
    if not isinstance(model, keras.Model):
        raise ValueError(f"expected a keras.Model encoder; got {type(model).__name__}")
    shape = getattr(model, "output_shape", None)
    if not shape or isinstance(shape, list) or len(shape) != 2:
        raise ValueError(f"expected an encoder with output [batch, dim]; {model.name!r} has "
                         f"output shape {shape}")
    size = image_size or static_image_size(model)
    return ImageEncoder(model, ImageConverter(image_size=size))


def load_image_encoder(path):
    """The `.keras` file at `path` as an `ImageEncoder`, checked by encoding one image.

    Raises ValueError in one line naming the file: missing, not a `.keras` archive,
    unreadable, a classifier (ends in a softmax), or unable to encode RGB images."""
    import zipfile

    import numpy as np

    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"no such file {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras file (truncated or corrupt: it is not a zip "
                         "archive)")
    from byol_tf import model_files

    try:
        model = model_files.load_model(path)
    except model_files.ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 (Keras' own complaint, kept)
        raise ValueError(f"{path} is not a readable .keras model ({error})") from None
    last = model.layers[-1] if getattr(model, "layers", None) else None
    if getattr(last, "activation", None) is keras.activations.softmax:
        raise ValueError(f"{path} ends in a softmax ({last.name}): a classifier, not an "
                         "encoder; evaluate the encoder it is built on")
    try:
        encoder = as_image_encoder(model)
        side = encoder.image_size or 32
        encoder(np.zeros((1, side, side, 3), np.uint8))  # one image through the contract
    except Exception as error:  # noqa: BLE001 (any layer's complaint, said in one line)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path} cannot encode RGB images through its input contract: "
                         f"{first}") from None
    return encoder


def fetch_checkpoint(entry):
    """The official checkpoint an imported entry (`hub.Entry` of source kind
    "deepmind_checkpoint") points at, fetched into the cache and checked against the card's
    sha256 when it has one: (its path, its sha256). OSError when it cannot be fetched."""
    import urllib.parse

    from absl import logging

    from byol_tf import hub
    from byol_tf.files import sha256_file

    source = entry.card["source"]
    expected = source.get("sha256")
    filename = pathlib.PurePosixPath(urllib.parse.urlsplit(source["url"]).path).name
    for part, what in ((entry.name, "name"), (filename, "checkpoint file name")):
        hub.check_entry_name(part, f"zoo entry {entry.handle!r}: its {what} {part!r}")
    path = hub.cache_root() / entry.name / filename
    if not path.is_file() or (expected and sha256_file(path) != expected):
        hub.fetch(source["url"], path, expected, entry.handle)
    actual = sha256_file(path)
    if not expected:
        logging.warning("zoo entry %r: the card gives no sha256 for %s; the fetched file's is "
                        "%s (compare it with the publisher's)", entry.name, filename, actual)
    return path, actual


def _converted_checkpoint(entry):
    """The official checkpoint an imported entry points at (`fetch_checkpoint`), converted
    once, the result cached."""
    from byol_tf import convert, model_files
    from byol_tf.files import atomic_path

    path, actual = fetch_checkpoint(entry)
    cached = path.with_name(f"image-encoder-{actual[:16]}.keras")
    if cached.is_file():
        return model_files.load_model(cached)
    converted = convert.from_deepmind(path, image_size=entry.card["image_size"])
    model = ImageEncoder(converted.encoder, converted.converter())
    with atomic_path(cached) as tmp:
        model.save(tmp)
    return model
