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


def _decoded_pixels(tf, data):
    """The pixels (int64) TensorFlow's decoder holds for encoded PNG, GIF, BMP or JPEG bytes,
    read in the graph without decoding: `byol_tf.data.folders.image_extent` in TensorFlow
    (a GIF's canvas and frames, wherever they are placed; a JPEG's frame header, wherever its
    segments put it)."""
    b = tf.cast(tf.io.decode_raw(tf.strings.join([data, b"\0" * 32]), tf.uint8), tf.int64)
    end = tf.size(b, out_type=tf.int64) - 32  # (padded: the fixed header fields always exist)

    def at(i):  # byte i, or -1 past the end
        i = tf.cast(i, tf.int64)
        return tf.where(i < end, tf.gather(b, tf.minimum(i, end + 31)), tf.constant(-1, tf.int64))

    def unsigned(i, n, big):
        order = range(n) if big else reversed(range(n))
        value = tf.constant(0, tf.int64)
        for k in order:
            value = value * 256 + b[i + k]
        return value

    def signed_le32(i):
        value = unsigned(i, 4, False)
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))

    def colour_table(flags):  # bytes of the colour table a GIF flags byte announces
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(
            tf.constant(2, tf.int64), tf.math.floormod(flags, 8)), 0)

    def gif():  # blocks one by one: an extension or a frame, then its data sub-blocks
        def block(pos, in_data, width, height, frames, done):
            c = at(pos)
            frame = tf.equal(c, 0x2C)
            left, top, w, h = (at(pos + i) + 256 * at(pos + i + 1) for i in (1, 3, 5, 7))
            next_block = tf.where(tf.equal(c, 0x21), pos + 2,
                                  pos + 11 + colour_table(at(pos + 9)))
            block_done = ~(frame | tf.equal(c, 0x21)) | (frame & (h < 0))
            width = tf.where(frame & ~in_data, tf.maximum(width, left + w), width)
            height = tf.where(frame & ~in_data, tf.maximum(height, top + h), height)
            frames = tf.where(frame & ~in_data, frames + w * h, frames)
            return (tf.where(in_data, pos + 1 + tf.maximum(c, 0), next_block),
                    tf.where(in_data, c > 0, ~block_done), width, height, frames,
                    tf.where(in_data, c < 0, block_done))

        start = 13 + colour_table(at(10))
        _, _, width, height, frames, _ = tf.while_loop(
            lambda *state: ~state[-1], block,
            (start, tf.constant(False), unsigned(6, 2, False), unsigned(8, 2, False),
             tf.constant(0, tf.int64), tf.constant(False)))
        return tf.maximum(width * height, frames)

    starts = lambda prefix: tf.strings.substr(data, 0, len(prefix)) == prefix  # noqa: E731
    jpeg = tf.cond(starts(b"\xff\xd8"), lambda: tf.reduce_prod(tf.cast(
        tf.image.extract_jpeg_shape(data)[:2], tf.int64)), lambda: tf.constant(0, tf.int64))
    return tf.where(starts(b"\x89PNG"), unsigned(16, 4, True) * unsigned(20, 4, True),
                    tf.where(starts(b"BM"), signed_le32(18) * signed_le32(22), tf.cond(
                        starts(b"GIF8"), gif, lambda: jpeg)))


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

        @tf.function(input_signature=[tf.TensorSpec(None, tf.string, "encoded")])
        def serve_encoded(self, encoded):
            def decode(indexed):  # images differ in size: convert them one by one
                index, data = indexed
                head = tf.strings.substr(data, 0, 8)
                known = tf.reduce_any([tf.strings.substr(head, 0, len(s)) == s
                                       for s in IMAGE_SIGNATURES])
                check = tf.debugging.Assert(known, [tf.strings.format(
                    "encoded[{}] is not a JPEG, PNG, GIF or BMP image", index)])
                with tf.control_dependencies([check]):
                    pixels = _decoded_pixels(tf, data)
                    small = tf.debugging.Assert(pixels <= max_image_pixels, [tf.strings.format(
                        "encoded[{}] has {} pixels, over the limit of {}",
                        (index, pixels, max_image_pixels))])
                with tf.control_dependencies([small]):
                    image = tf.io.decode_image(data, channels=3, expand_animations=False)
                image.set_shape((None, None, 3))
                return self.model.converter(image[None])[0]

            with tf.control_dependencies([tf.debugging.assert_equal(
                    tf.rank(encoded), 1, message="encoded must have rank 1 [batch] (one string "
                    "of encoded image bytes per image)")]):
                encoded = tf.reshape(encoded, [-1])
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


def file_hashes(path):
    """{relative path: sha256} of every file of the SavedModel at `path`."""
    from byol_tf.files import sha256_file

    path = pathlib.Path(path)
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*"))
            if p.is_file()}


def is_complete(path, sha256=None):
    """Whether `path` holds a whole SavedModel: `saved_model.pb` and the variables' index and
    data (what TF Serving loads), and then either exactly the files `sha256` records
    ({relative path: sha256}, `file_hashes`) or, without a record, a SavedModel that loads."""
    path = pathlib.Path(path)
    if not ((path / "saved_model.pb").is_file() and (path / "variables" / "variables.index")
            .is_file() and any((path / "variables").glob("variables.data-*"))):
        return False
    if sha256 is not None:
        return file_hashes(path) == sha256
    import tensorflow as tf

    try:
        tf.saved_model.load(str(path))
    except Exception:  # noqa: BLE001 (a damaged SavedModel fails in many ways)
        return False
    return True
