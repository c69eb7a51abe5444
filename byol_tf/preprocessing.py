"""The encoder's input contract, in one place: `ImageConverter`.

Every encoder byol_tf trains, exports, publishes, evaluates or converts sees its images
through this layer:

    images [B, H, W, 3], uint8 in [0, 255] or float in [0, 1], any H and W
      → float [0, 1]
      → central square crop (`crop_fraction` of the shorter side; offsets as DeepMind's
        evaluation input) and bicubic resize to `image_size` × `image_size`, if needed
      → (x − mean) / std, ImageNet's mean and std by default
      → [B, image_size, image_size, 3], float32 (float64 input stays float64)

Pretraining views are already square and at `image_size`, so for them only the
normalisation runs. `image_size=None` keeps the input's size (normalisation only).
"""

import keras
import numpy as np
from keras import ops

from byol_tf.inputs import check_image_spec, to_float_images

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_side(height, width, crop_fraction):
    """Side of the central square crop, computed in float32 as DeepMind's input pipeline
    (`int(fraction · min(height, width))`, at least 1)."""
    side = min(height, width)
    if crop_fraction < 1.0:
        side = max(int(np.float32(crop_fraction) * np.float32(side)), 1)
    return side


@keras.saving.register_keras_serializable(package="byol_tf")
class ImageConverter(keras.layers.Layer):
    """Images of any size → normalised encoder input `[B, image_size, image_size, 3]`.

    Args:
      image_size: int or None. Side of the output in pixels; None keeps the input's size
        (and does no crop). Defaults to None.
      crop_fraction: float in (0, 1]. Side of the central square crop as a fraction of
        the shorter image side; 1.0 takes the largest square, 224/256 the ImageNet
        evaluation crop. Defaults to 1.0.
      antialias: bool. Antialiased bicubic resize when shrinking (False: plain bicubic,
        as DeepMind's input pipeline). Defaults to True.
      mean: 3 floats. Per-channel mean subtracted from [0, 1] images. Defaults to ImageNet's.
      std: 3 floats. Per-channel standard deviation divided by. Defaults to ImageNet's.
    """

    def __init__(self, image_size=None, crop_fraction=1.0, antialias=True, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, **kwargs):
        kwargs["autocast"] = False  # the input's dtype decides (uint8, float32 or float64)
        super().__init__(**kwargs)
        if image_size is not None and int(image_size) < 1:
            raise ValueError(f"image_size must be ≥ 1 or None; got {image_size}")
        if not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1]; got {crop_fraction}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 values each, std > 0; got {mean}, {std}")
        self.image_size = None if image_size is None else int(image_size)
        self.crop_fraction, self.antialias = float(crop_fraction), bool(antialias)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.built = True

    def call(self, images):
        check_image_spec(images)
        x = to_float_images(images)
        if self.image_size is not None:
            height, width = x.shape[1], x.shape[2]
            if height is None or width is None:
                x = self._crop_and_resize_dynamic(x)
            else:
                x = self._crop_and_resize_static(x, height, width)
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        std = ops.convert_to_tensor(self.std, dtype=x.dtype)
        return (x - mean) / std

    def _resize(self, x):
        size = (self.image_size, self.image_size)
        y = ops.image.resize(x, size, interpolation="bicubic", antialias=self.antialias)
        return ops.cast(ops.clip(y, 0.0, 1.0), x.dtype)

    def _crop_and_resize_static(self, x, height, width):
        side = crop_side(height, width, self.crop_fraction)
        top, left = (height - side + 1) // 2, (width - side + 1) // 2
        if (side, side) != (height, width):
            x = x[:, top:top + side, left:left + side, :]
        return x if side == self.image_size else self._resize(x)

    def _crop_and_resize_dynamic(self, x):
        """The same for sizes known only at run time (a SavedModel signature: TF only)."""
        import tensorflow as tf

        shape = tf.shape(x)
        side = tf.minimum(shape[1], shape[2])
        if self.crop_fraction < 1.0:
            side = tf.maximum(tf.cast(tf.constant(self.crop_fraction, tf.float32) *
                                      tf.cast(side, tf.float32), tf.int32), 1)
        top, left = (shape[1] - side + 1) // 2, (shape[2] - side + 1) // 2
        x = x[:, top:top + side, left:left + side, :]
        x = tf.cond(side == self.image_size, lambda: x, lambda: self._resize(x))
        x.set_shape((None, self.image_size, self.image_size, 3))
        return x

    def compute_output_shape(self, input_shape):
        if self.image_size is None:
            return tuple(input_shape)
        return (input_shape[0], self.image_size, self.image_size, 3)

    def compute_output_spec(self, images):
        dtype = keras.backend.standardize_dtype(images.dtype)
        dtype = dtype if dtype == "float64" else "float32"
        return keras.KerasTensor(self.compute_output_shape(images.shape), dtype=dtype)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "crop_fraction": self.crop_fraction, "antialias": self.antialias,
                "mean": list(self.mean), "std": list(self.std)}

