"""Independent numpy expectations of byol_tf's input contract."""

import numpy as np

from byol_tf.preprocessing import IMAGENET_MEAN, IMAGENET_STD


def normalised(images):
    """uint8 images → (x / 255 − ImageNet mean) / std, float32 numpy."""
    x = np.asarray(images, np.float32) / 255.0
    return (x - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)


def reference_embedding(encoder, images):
    """What an ImageEncoder around the raw Keras `encoder` must return for uint8 `images`
    already at the encoder's size (no crop or resize): the encoder of the normalised images."""
    return np.asarray(encoder(normalised(images), training=False))
