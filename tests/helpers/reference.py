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


def np_lars(w, g, m, lr, weight_decay, adapt=True, eta=1e-3, momentum=0.9):
    """One step of DeepMind's LARS rule (byol/utils/optimizers.py) in numpy: (w, m) after it.
    `adapt`: weight decay and the trust ratio apply (not for biases and norm parameters)."""
    if adapt:
        g = g + weight_decay * w
        w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
        g = g * (eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
    m = momentum * m + g
    return w - lr * m, m
