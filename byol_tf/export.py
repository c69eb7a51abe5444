"""Export an `ImageEncoder` as a SavedModel for TF Serving.

`export_encoder(model, path)` writes the SavedModel at exactly `path`. For TF Serving,
give it `<base>/<model_name>/<version>` (a version is a folder named by an integer).
The folder appears complete or not at all: it is written under a hidden temporary name
beside `path` and renamed into place, so TF Serving, which polls `<base>/<model_name>`,
never sees a half-written version, and a failed export (a full disk, say) leaves nothing
behind.

Signatures (the model's own `ImageConverter` inside the graph, any batch size):
  serving_default: images uint8 [batch, H, W, 3], any H and W → {"embedding": float32 [batch, D]}
  serve_encoded:   encoded string [batch] (JPEG / PNG / BMP / GIF bytes) → the same
With a `classifier` (e.g. an imported DeepMind checkpoint's), both also return "logits".
Bad requests (wrong rank or channel count: an error saying which; bytes of no image
format: an error naming the element, `encoded[i]`; a truncated image: a decode error) fail
the request with a message, never the server.
"""

import errno
import pathlib

from byol_tf.files import atomic_path


def _header_pixels(tf, data):
    """width × height (int64) read from the header of encoded PNG, GIF, BMP or JPEG bytes,
    in the graph and without decoding (`byol_tf.data.folders.image_size_of` in TensorFlow)."""
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(data, 0, 32), b"\0" * 32]), 0, 32)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)

    def unsigned(i, n, big):
        order = range(n) if big else reversed(range(n))
        value = tf.constant(0, tf.int64)
        for k in order:
            value = value * 256 + b[i + k]
        return value

    def signed_le32(i):
        value = unsigned(i, 4, False)
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    starts = lambda prefix: tf.strings.substr(data, 0, len(prefix)) == prefix  # noqa: E731
    jpeg = tf.cond(starts(b"\xff\xd8"), lambda: tf.reduce_prod(tf.cast(
        tf.image.extract_jpeg_shape(data)[:2], tf.int64)), lambda: tf.constant(0, tf.int64))
    return tf.where(starts(b"\x89PNG"), unsigned(16, 4, True) * unsigned(20, 4, True),
                    tf.where(starts(b"GIF8"), unsigned(6, 2, False) * unsigned(8, 2, False),
                             tf.where(starts(b"BM"), signed_le32(18) * signed_le32(22), jpeg)))


def export_encoder(model, path, classifier=None, max_image_pixels=None):
    """Writes `model` (an `ImageEncoder`, or anything `byol_tf.image_encoder.as_image_encoder`
    accepts) as a SavedModel at `path`; returns `path`.

    classifier: optional Keras model `embedding → logits`; the signatures then also return
      "logits".
    max_image_pixels: `serve_encoded` refuses images with more pixels, read from their
      headers before decoding (default `byol_tf.data.folders.MAX_IMAGE_PIXELS`).
    Raises FileExistsError if `path` exists (TF Serving versions are immutable), ValueError
    for a model without a fixed image size, OSError (naming `path`) when the write fails."""
    import tensorflow as tf

    from byol_tf.data import IMAGE_SIGNATURES
    from byol_tf.image_encoder import as_image_encoder

    if max_image_pixels is None:
        from byol_tf.data import folders

        max_image_pixels = folders.MAX_IMAGE_PIXELS
    max_image_pixels = tf.constant(int(max_image_pixels), tf.int64)
    model = as_image_encoder(model)
    size = model.image_size
    if size is None:
        raise ValueError("export_encoder: the model's ImageConverter has no image_size; a "
                         "serving graph resizes every image to one size (set image_size)")
    path = pathlib.Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: TF Serving versions are immutable; use another version")

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.model, self.classifier = model, classifier

        def outputs(self, normalised):
            embedding = self.model.encoder(normalised, training=False)
            out = {"embedding": tf.cast(embedding, tf.float32)}
            if self.classifier is not None:
                out["logits"] = tf.cast(self.classifier(embedding, training=False), tf.float32)
            return out

        # The rank is left open in the signature: TF Serving does not check a request's shape
        # against it, and a declared rank lets TensorFlow fold a rank check away, so a
        # request of another rank would fail deep inside with "Index out of range".
        @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, "images")])
        def serve(self, images):
            shape = tf.shape(images)
            checks = [tf.debugging.assert_equal(tf.size(shape), 4, message=(
                          "images must have rank 4 [batch, height, width, 3]")),
                      tf.debugging.assert_equal(shape[-1], 3,
                                                message="images must have 3 channels (RGB)"),
                      tf.debugging.assert_positive(tf.size(images), message=(
                          "images: an empty batch (no pixels)"))]
            with tf.control_dependencies(checks):
                images = tf.ensure_shape(tf.identity(images), (None, None, None, 3))
            return self.outputs(self.model.converter(images))

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, "encoded")])
        def serve_encoded(self, encoded):
            def decode(indexed):  # images differ in size: convert them one by one
                index, data = indexed
                head = tf.strings.substr(data, 0, 8)
                known = tf.reduce_any([tf.strings.substr(head, 0, len(s)) == s
                                       for s in IMAGE_SIGNATURES])
                check = tf.debugging.Assert(known, [tf.strings.format(
                    "encoded[{}] is not a JPEG, PNG, GIF or BMP image", index)])
                with tf.control_dependencies([check]):
                    pixels = _header_pixels(tf, data)
                    small = tf.debugging.Assert(pixels <= max_image_pixels, [tf.strings.format(
                        "encoded[{}] has {} pixels, over the limit of {}",
                        (index, pixels, max_image_pixels))])
                with tf.control_dependencies([small]):
                    image = tf.io.decode_image(data, channels=3, expand_animations=False)
                image.set_shape((None, None, 3))
                return self.model.converter(image[None])[0]

            with tf.control_dependencies([tf.debugging.assert_positive(
                    tf.size(encoded), message="encoded: an empty batch (no images)")]):
                indices = tf.range(tf.shape(encoded)[0])
            x = tf.map_fn(decode, (indices, encoded), fn_output_signature=tf.TensorSpec(
                (size, size, 3), tf.float32))
            return self.outputs(x)

    module = Serving()
    try:
        with atomic_path(path) as partial:
            tf.saved_model.save(module, str(partial), signatures={
                "serving_default": module.serve, "serve_encoded": module.serve_encoded})
    except (OSError, tf.errors.OpError) as error:  # e.g. ResourceExhausted: disk full
        reason = getattr(error, "strerror", None) or str(error).split("; ")[-1]
        full = (isinstance(error, tf.errors.ResourceExhaustedError) or "space" in reason.lower()
                or getattr(error, "errno", None) == errno.ENOSPC)
        raise OSError(errno.ENOSPC if full else getattr(error, "errno", None),
                      f"export to {path} failed, nothing was written: "
                      f"{'No space left on device' if full else reason}", str(path)) from error
    return path


def is_complete(path):
    """Whether `path` holds a whole SavedModel: `saved_model.pb` and the variables' index
    and data (what TF Serving loads)."""
    path = pathlib.Path(path)
    return ((path / "saved_model.pb").is_file() and (path / "variables" / "variables.index").is_file()
            and any((path / "variables").glob("variables.data-*")))
