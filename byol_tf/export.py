"""Export an encoder for TF Serving (SavedModel) and for Keras users (`.keras`).

Layout (TF Serving's): `<export_dir>/<model_name>/<version>/` holds the SavedModel;
`<export_dir>/<model_name>/encoder.keras` the Keras encoder (loads on every backend).

Signatures (resizing and normalisation are inside the graph, any batch size):
  serving_default: images uint8 [batch, H, W, 3] → {"embedding": float32 [batch, D]}
  serve_encoded:   encoded string [batch] (JPEG / PNG / BMP / GIF bytes) → the same
Images are centre-cropped to a square (`crop_fraction` of the shorter side; 1.0 by default)
and resized (bicubic, antialiased by default) to image_size × image_size. With a
`classifier` (e.g. an imported DeepMind checkpoint's), both also return "logits". Bad requests (wrong rank
or channel count: rejected by the signature; undecodable bytes: a decode error) fail
the request with a message, never the server.
"""

import pathlib

import numpy as np

from byol_tf.byol import IMAGENET_MEAN, IMAGENET_STD


def export_encoder(encoder, export_dir, image_size, model_name="byol_encoder", version=1,
                   classifier=None, crop_fraction=1.0, antialias=True):
    """Writes the SavedModel and the `.keras` file; returns the SavedModel path.

    classifier: optional Keras model `embedding → logits`; the signatures then also return
      "logits". crop_fraction: side of the central square crop as a fraction of the shorter
      image side (1.0: the largest square; 224/256 = 0.875: the ImageNet evaluation crop).
    antialias: antialiased bicubic resize (False: TensorFlow's plain bicubic, as DeepMind's
      input pipeline)."""
    import tensorflow as tf

    if image_size < 1:
        raise ValueError(f"image_size must be ≥ 1; got {image_size}")
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction}")
    root = pathlib.Path(export_dir) / model_name
    path = root / str(version)
    if path.exists():
        raise FileExistsError(f"{path} exists: TF Serving versions are immutable; use another version")
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)

    def prepare(images):
        """uint8 [B, H, W, 3] → normalised float32 [B, S, S, 3]: central square crop
        (crop_fraction of the shorter side, offsets as DeepMind's pipeline), bicubic resize."""
        # Signature wrappers do not enforce the channel count: say what is wrong.
        check = tf.debugging.assert_equal(tf.shape(images)[-1], 3,
                                          message="images must have 3 channels (RGB)")
        with tf.control_dependencies([check]):
            images = tf.identity(images)
        shape = tf.shape(images)
        side = tf.minimum(shape[1], shape[2])
        if crop_fraction < 1.0:
            side = tf.maximum(tf.cast(crop_fraction * tf.cast(side, tf.float32), tf.int32), 1)
        top, left = (shape[1] - side + 1) // 2, (shape[2] - side + 1) // 2
        square = images[:, top:top + side, left:left + side, :]
        x = tf.cast(square, tf.float32) / 255.0
        x = tf.cond(side == image_size, lambda: x,
                    lambda: tf.image.resize(x, (image_size, image_size), "bicubic",
                                            antialias=antialias))
        x = tf.clip_by_value(x, 0.0, 1.0)
        x.set_shape((None, image_size, image_size, 3))
        return (x - mean) / std

    class Serving(tf.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.classifier = encoder, classifier

        def outputs(self, x):
            embedding = self.encoder(x, training=False)
            out = {"embedding": tf.cast(embedding, tf.float32)}
            if self.classifier is not None:
                out["logits"] = tf.cast(self.classifier(embedding, training=False), tf.float32)
            return out

        @tf.function(input_signature=[tf.TensorSpec((None, None, None, 3), tf.uint8, "images")])
        def serve(self, images):
            return self.outputs(prepare(images))

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, "encoded")])
        def serve_encoded(self, encoded):
            def decode(data):  # images differ in size: prepare them one by one
                image = tf.io.decode_image(data, channels=3, expand_animations=False)
                image.set_shape((None, None, 3))
                return prepare(image[None])[0]

            x = tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec(
                (image_size, image_size, 3), tf.float32))
            return self.outputs(x)

    module = Serving()
    root.mkdir(parents=True, exist_ok=True)
    tf.saved_model.save(module, str(path), signatures={
        "serving_default": module.serve, "serve_encoded": module.serve_encoded})
    encoder.save(root / "encoder.keras")
    return path


def reference_embedding(encoder, images, image_size):
    """What `serving_default` should return, computed with Keras ops only (for tests)."""
    import keras

    x = np.asarray(images, np.float32) / 255.0
    if x.shape[1] != image_size or x.shape[2] != image_size:
        raise ValueError("reference_embedding takes images already at image_size")
    x = (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    return np.asarray(keras.ops.convert_to_numpy(encoder(x, training=False)))
