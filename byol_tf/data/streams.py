"""The pretraining stream: `pretrain_dataset`, a seeded, endless (or one-pass) `tf.data`
pipeline of batches for `fit`."""

import importlib.util
import sys

import keras
import numpy as np

from byol_tf import augment as augment_lib
from byol_tf.augmenter import Augmenter
from byol_tf.data.folders import read_folder
from byol_tf.data.sample import class_count
from byol_tf.data.sources import Source
from byol_tf.data.tfds import TFDS_DATASETS, _tfds, _tfds_load, decoded_split, fits_in_memory


def pretrain_dataset(name, batch_size, image_size=None, data_dir=None, split=None, seed=0,
                     shuffle_buffer=10_000, view1=augment_lib.VIEW1, view2=augment_lib.VIEW2,
                     repeat=False, skip_bad_images=False, in_memory=None):
    """A `tf.data.Dataset` for `BYOL.fit`, batched (drop_remainder) and prefetched.

    Args:
      name: a `Source`, or what `Source.of` takes: "sample", an .npz file of arrays
        (`load_npz`), a TFDS name (cifar10, cifar100, stl10, imagenet2012) or a folder
        (`data_dir`, `split` and `skip_bad_images` then make the source).
      image_size: side of the views (needed for variable-size sources).
      view1, view2: the views' augmentation configs (the model's `view1`/`view2`); used
        here for variable-size sources, which crop per image in tf.data.
      skip_bad_images: folders only: leave out (with a warning) files that are not
        readable images instead of raising a ValueError that names them.
      in_memory: fixed-size TFDS datasets (others ignore it): read the examples from the
        split decoded once (`decoded_split`) instead of decoding its files every epoch; None:
        when the split fits in `IN_MEMORY_BYTES`. The stream of batches is the same either way.
      repeat: an endless stream, reshuffled every pass; with a fixed seed the stream is
        the same in every run and from every iterator, so `dataset.skip(k)` resumes it
        exactly at batch k.
    Without TensorFlow installed (JAX), the endless stream of an array source is an
    `ArrayStream` instead.
    Returns:
      (dataset, info) with info = dict(num_examples, image_size, premade_views, num_classes,
      and for folders the image files used).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1; got {batch_size}")
    source = Source.of(name, data_dir=data_dir, split=split, skip_bad_images=skip_bad_images)
    name, arrays = source.name, source.kind == "arrays"
    if arrays:
        s = source.arrays()
        x, y = s["x_train"], s["y_train"].astype(np.int64)
        info = dict(num_examples=len(x), image_size=x.shape[1], premade_views=False,
                    num_classes=class_count(s))
        if repeat and not tensorflow_available():
            _check_one_batch(name, info, batch_size)
            return ArrayStream(x, y, batch_size, seed), info
    import tensorflow as tf

    if arrays:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
    elif source.kind == "tfds":
        tfds = _tfds()
        default_split, side, labelled = TFDS_DATASETS[name]
        split = source.split or default_split
        data_dir = source.data_dir
        ds, builder_info = _tfds_load(tfds, name, split, data_dir)
        num = builder_info.splits[split].num_examples
        num_classes = builder_info.features["label"].num_classes if labelled else None
        info = dict(num_examples=num, image_size=side, premade_views=side is None,
                    num_classes=num_classes)
        if side and (in_memory if in_memory is not None else fits_in_memory(name, split, num)):
            # The same examples in the same order as the files' stream (so the same
            # shuffled batches), decoded once instead of every epoch.
            ds = tf.data.Dataset.from_tensor_slices(decoded_split(name, split, data_dir))
        if not labelled:
            ds = ds.map(lambda x, y: x)
    else:
        ds, files, classes = read_folder(str(source.path), source.skip_bad_images,
                                         source.max_image_pixels)
        info = dict(num_examples=len(files), image_size=None, premade_views=True,
                    num_classes=len(classes) if classes else None, files=files,
                    max_image_pixels=source.max_image_pixels)
    _check_one_batch(name, info, batch_size)
    buffer = min(shuffle_buffer, info["num_examples"])
    if repeat:
        # Pass p is shuffled with its own seed (seed, p), so every iterator of this dataset
        # yields the same endless stream, however many were made before (a resume at batch
        # k is `skip(k)` on a fresh iterator).
        examples = ds

        def one_pass(p):
            # A tensor seed must not meet a global seed (`keras.utils.set_random_seed`): with
            # global seed 0 TensorFlow fails on it (tensorflow#17284), with another it
            # changes the stream. Traced without one, the stream is the same either way.
            tf.compat.v1.get_default_graph().seed = None
            return examples.shuffle(buffer, seed=seed * 1_000_003 + p,
                                    reshuffle_each_iteration=False)

        ds = tf.data.Dataset.range(2**62).flat_map(one_pass)
    else:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if info["premade_views"]:
        if not image_size:
            raise ValueError(f"dataset {name!r} has images of varying size: pass image_size")
        info["image_size"] = image_size
        # Every draw is a function of (seed, position in the stream): a resume is exact.
        augmenter = Augmenter(image_size, view1, view2, seed)
        if not isinstance(ds.element_spec, tuple):  # unlabelled: (image,)
            ds = ds.map(lambda image: (image,))
        ds = ds.enumerate().map(lambda i, example: (augmenter.crop_each(example[0], i),
                                                    *example[1:]),
                                num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=True).enumerate()
        ds = ds.map(lambda i, batch: _finished(augmenter, i, *batch))
    else:
        ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    # Shard by element across workers: single-file TFDS splits cannot be sharded by file.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE), info


def _finished(augmenter, position, views, *label):
    views = augmenter.finish(views, position)
    return (views, *label) if label else views


def _check_one_batch(name, info, batch_size):
    if info["num_examples"] < batch_size:
        raise ValueError(f"dataset {name!r} has {info['num_examples']} examples, fewer than "
                         f"one batch of {batch_size}")


def tensorflow_available():
    """Whether TensorFlow can be imported here (without importing it)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    return importlib.util.find_spec("tensorflow") is not None


class ArrayStream(keras.utils.PyDataset):
    """The endless stream of `(images, labels)` batches of in-memory arrays, without
    TensorFlow: pass p over the examples is numpy's permutation for (seed, p), cut into whole
    batches; batch k of the stream is the same in every process, so `skip(k)` resumes it.

    Args:
      x: uint8 images [N, H, W, 3]; y: labels [N].
      batch_size: int. seed: int. start: int, the stream's first batch. Defaults to 0.
    """

    def __init__(self, x, y, batch_size, seed, start=0):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.start = x, y, batch_size, seed, start
        self.per_pass = len(x) // batch_size
        self._order = (None, None)  # (pass, its permutation)

    @property
    def num_batches(self):
        return None  # endless

    def __getitem__(self, index):
        pass_, i = divmod(self.start + index, self.per_pass)
        if self._order[0] != pass_:
            self._order = pass_, np.random.default_rng([self.seed, pass_]).permutation(len(self.x))
        rows = self._order[1][i * self.batch_size:(i + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def skip(self, count):
        return ArrayStream(self.x, self.y, self.batch_size, self.seed, self.start + count)
