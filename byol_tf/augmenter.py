"""`Augmenter`: the two augmented views of a batch, with both views' configs and the
random state in one layer (`byol_tf.augment` holds the pure functions it draws and applies).

In the train step, `augmenter(images)` draws from its `SeedGenerator`, which checkpoints
save. Sources whose images differ in size are cropped per image in `tf.data` before
batching (`crop_each`) and finished per batch (`finish`); there every draw is a pure
function of (seed, position in the stream), so a run resumed at step k augments exactly as
an uninterrupted one.
"""

import keras
from keras import ops

from byol_tf import augment
from byol_tf.distribute import replica
from byol_tf.inputs import to_float_images


@keras.saving.register_keras_serializable(package="byol_tf")
class Augmenter(keras.layers.Layer):
    """`images [B, H, W, 3]` (uint8, or float in [0, 1]) → `(view1, view2)`, each
    `[B, S, S, 3]` float in [0, 1], every sample with its own random draws.

    Args:
      image_size: int or None. S, the views' side; None: the input's height. Defaults to None.
      view1: dict or None. First view's config (`byol_tf.augment`). Defaults to the
        paper's `VIEW1`.
      view2: dict or None. Second view's config. Defaults to the paper's `VIEW2`.
      seed: int or None. Seed of the draws. Defaults to None.
    """

    def __init__(self, image_size=None, view1=None, view2=None, seed=None, **kwargs):
        kwargs["autocast"] = False
        super().__init__(**kwargs)
        self.image_size, self.seed = image_size, seed
        self.view1, self.view2 = augment.view_configs(view1, view2)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    @property
    def views(self):
        return self.view1, self.view2

    def call(self, images):
        images = to_float_images(images)
        size = self.image_size or images.shape[1]
        return tuple(augment.augment(images, config, size, self.seed_generator, replica())
                     for config in self.views)

    # ---------------------------------------------------------- tf.data (TF backend)
    def _stateless_draws(self, rows, stream, position):
        """`[rows, NUM_DRAWS]` uniforms, a function of (seed, stream, position) alone."""
        import tensorflow as tf

        seed = tf.stack([tf.constant((self.seed or 0) * 4 + stream, tf.int64),
                         tf.cast(position, tf.int64)])
        return tf.random.stateless_uniform((rows, augment.NUM_DRAWS), seed=seed)

    def crop_each(self, image, position):
        """One image `[H, W, 3]` of any size and its position in the stream → its two views'
        random resized crops, `[S, S, 3]` float in [0, 1] each (before batching)."""
        import tensorflow as tf

        images = to_float_images(image[None])
        shape = tf.shape(images)
        crops = []
        for index, config in enumerate(self.views):
            u = self._stateless_draws(1, index, position)
            params = augment.crop_window(u, tf.cast(shape[1], tf.float32),
                                         tf.cast(shape[2], tf.float32), config)
            params["flip"] = tf.zeros((1,), tf.bool)
            crops.append(augment.crop_resize_flip(images, params, self.image_size)[0])
        return tuple(crops)

    def finish(self, views, position):
        """Cropped views `([B, S, S, 3], [B, S, S, 3])` and the batch's position in the
        stream → the views with the rest of their augmentation (flip, colour, blur, solarize)."""
        out = []
        for index, (view, config) in enumerate(zip(views, self.views)):
            config = augment.without_crop(config)
            u = self._stateless_draws(ops.shape(view)[0], 2 + index, position)
            params = augment.view_params(u, view.shape[1:3], config)
            out.append(augment.apply_view(view, params, config, view.shape[1]))
        return tuple(out)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "view1": self.view1,
                "view2": self.view2, "seed": self.seed}
