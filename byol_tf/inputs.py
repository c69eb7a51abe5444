"""What a training batch may be, and the checks that say clearly when it is not.

A batch is one of
    images                         uint8 [B, H, W, 3] in [0, 255] or float in [0, 1]
    (images, labels)               labels: integer class ids [B]
    (view1, view2)                 two premade views of the same images
    ((view1, view2), labels)
(Keras' optional third element, sample weights, is accepted and ignored.)
"""

import contextlib
import sys

import keras
import numpy as np
from keras import ops

CHECK_TAG = "byol_tf input check"  # marks in-graph check messages, see `in_graph_check_message`


def to_float_images(images):
    """uint8 [0, 255] → float32 [0, 1]; 16-bit float images → float32; float32 and float64
    images unchanged."""
    dtype = keras.backend.standardize_dtype(images.dtype)
    if dtype == "uint8":
        return ops.cast(images, "float32") / 255.0
    return images if dtype in ("float32", "float64") else ops.cast(images, "float32")


def split_batch(data):
    """A batch → (images or (view1, view2), labels or None). Raises ValueError for any
    other structure, or labels that are not of shape [batch]."""
    x, labels = data, None
    if isinstance(data, (tuple, list)):
        if len(data) == 2 and len(getattr(data[1], "shape", ())) == 4:
            x = tuple(data)  # (view1, view2)
        elif len(data) in (2, 3):
            x, labels = data[0], data[1]
        else:
            raise ValueError(f"Expected images, (images, labels), (view1, view2) or "
                             f"((view1, view2), labels); got a tuple of {len(data)}")
    if isinstance(x, (tuple, list)):
        if len(x) != 2:
            raise ValueError(f"Premade views must be a pair (view1, view2); got {len(x)}")
        x = tuple(x)
    if labels is not None and len(labels.shape) != 1:
        raise ValueError(f"labels must be integer class ids of shape [batch]; "
                         f"got shape {tuple(labels.shape)}")
    return x, labels


def image_tensors(x):
    """The image tensors of `split_batch`'s first element, with their names."""
    if isinstance(x, tuple):
        return (("view1", x[0]), ("view2", x[1]))
    return (("images", x),)


def check_image_spec(images, what="images"):
    """Static checks: rank 4, 3 channels, uint8 or float. Raises ValueError."""
    shape = tuple(images.shape)
    dtype = keras.backend.standardize_dtype(images.dtype)
    if len(shape) != 4:
        raise ValueError(f"{what} must have rank 4 [batch, height, width, 3]; got shape {shape}")
    if shape[-1] != 3:
        raise ValueError(f"{what} must have 3 channels (RGB); got shape {shape} "
                         f"with {shape[-1]} channels")
    if dtype != "uint8" and not dtype.startswith(("float", "bfloat")):
        raise ValueError(f"{what} must be uint8 in [0, 255] or float in [0, 1]; got dtype {dtype}")


def check_image_values(images, what="images"):
    """Eager value checks on a numpy-convertible batch: float must be finite, in [0, 1]."""
    check_image_spec(images, what)
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinite values")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(f"float {what} must be in [0, 1]; got values in "
                         f"[{array.min():.4g}, {array.max():.4g}] (uint8 images are scaled "
                         "automatically; divide floats in [0, 255] by 255)")


def check_first_batch(x):
    """Eager checks of the first batch of what `fit` was given (a tf.data.Dataset, a
    `keras.utils.PyDataset`, arrays or None): not empty, a known structure, images of the
    right shape, dtype and range."""
    tf = sys.modules.get("tensorflow")  # (a tf.data.Dataset means TensorFlow is imported)
    if tf is not None and isinstance(x, tf.data.Dataset):
        batch = next(iter(x.take(1)), None)
        if batch is None:
            raise ValueError("The training dataset is empty: it yielded no batch")
    elif isinstance(x, keras.utils.PyDataset):
        batch = x[0]
    elif x is None:
        return
    else:
        if len(x) == 0:
            raise ValueError("The training data is empty")
        batch = x
    images, _ = split_batch(batch)
    for what, tensor in image_tensors(images):
        check_image_values(tensor, what)


def assert_image_values(data):
    """In-graph value checks of a batch's float images (TF backend, not under XLA): finite
    and in [0, 1]. A failure's message carries `CHECK_TAG`."""
    import tensorflow as tf

    for t in keras.tree.flatten(data):
        if t is None or len(t.shape) != 4 or not t.dtype.is_floating:
            continue
        t32 = tf.cast(t, tf.float32)
        tf.debugging.assert_all_finite(t32, f"{CHECK_TAG}: images contain NaN or Inf")
        tf.debugging.Assert(
            tf.logical_and(tf.reduce_min(t32) >= 0.0, tf.reduce_max(t32) <= 1.0),
            [f"{CHECK_TAG}: float images must be in [0, 1]; min/max:",
             tf.reduce_min(t32), tf.reduce_max(t32)])


def checked_batch(data):
    """A batch at the dataset→model boundary → (float images [0, 1] or (view1, view2),
    labels or None), checked: its structure and static spec (ValueError, while tracing) and,
    on the TF backend outside XLA, its float values (in-graph; `reported_as_value_errors`
    turns a failure into a ValueError)."""
    from byol_tf.compat import in_xla_context

    x, labels = split_batch(data)
    for what, tensor in image_tensors(x):
        check_image_spec(tensor, what)
    if keras.backend.backend() == "tensorflow" and not in_xla_context():
        assert_image_values(data)
    if isinstance(x, tuple):
        return tuple(to_float_images(v) for v in x), labels
    return to_float_images(x), labels


@contextlib.contextmanager
def reported_as_value_errors(x):
    """Around `fit(x)`: the first batch checked eagerly (structure, shape, dtype, range,
    an empty dataset), and a failed in-graph check of a later batch raised as ValueError."""
    check_first_batch(x)
    try:
        yield
    except Exception as error:
        message = in_graph_check_message(error)
        if message:
            raise ValueError(message) from None
        raise


def in_graph_check_message(error):
    """The message of a failed `assert_image_values` check inside `error`, or None."""
    text = str(error)
    if CHECK_TAG not in text:
        return None
    return text.split(CHECK_TAG + ": ", 1)[1].split("\n")[0]
