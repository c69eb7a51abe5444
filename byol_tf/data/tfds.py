"""TFDS datasets, read without downloading; fixed-size splits decoded once per process (in
memory) and once per machine (on disk, checked by their sha256)."""

import os
import pathlib

import numpy as np

from byol_tf.data.folders import DataError
from byol_tf.files import atomic_path

# TFDS name → (pretraining split, fixed image side or None, has labels in that split)
TFDS_DATASETS = {
    "cifar10": ("train", 32, True),
    "cifar100": ("train", 32, True),
    "stl10": ("unlabelled", 96, False),
    "imagenet2012": ("train", None, True),
}
# Fixed-size TFDS splits of at most this many bytes of uint8 pixels are decoded once per
# process and kept (read-only) in memory: pretraining then decodes no image per epoch, and
# the evaluation reuses the arrays (CIFAR-10's train split is 153.6 MB; STL-10's 100,000
# unlabelled images, 2.8 GB, stream from their files).
IN_MEMORY_BYTES = 1 << 30
_DECODED = {}
# ... and kept decoded on disk between processes, under $BYOL_TF_CACHE (default
# ~/.cache/byol_tf; "off" keeps nothing): reading the arrays back is much faster
# than decoding the PNGs again.
CACHE_ENV = "BYOL_TF_CACHE"


def _decoded_key(name, split, data_dir):
    return name, split, os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None


def decoded_split(name, split, data_dir=None):
    """(images uint8 [N, H, W, 3], labels int64 [N]) of a whole TFDS split, in its TFDS
    order, decoded once per process: splits within `IN_MEMORY_BYTES` stay cached, read-only
    (the same arrays for pretraining and evaluation), and on disk (`CACHE_ENV`)."""
    key = _decoded_key(name, split, data_dir)
    if key not in _DECODED:
        tfds = _tfds()
        _tfds_load(tfds, name, split, data_dir)  # (its errors name what is missing)
        builder = tfds.builder(name, data_dir=key[2])
        cache = _cache_file(builder, split)
        arrays = _read_cache(cache) if cache else None
        if arrays is None:
            x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1,
                                                    as_supervised=True, shuffle_files=False))
            arrays = x, y.astype(np.int64)
            if cache and x.nbytes <= IN_MEMORY_BYTES:
                _write_cache(cache, *arrays)
        x, y = arrays
        if x.nbytes > IN_MEMORY_BYTES:
            return x, y
        x.flags.writeable = y.flags.writeable = False
        _DECODED[key] = x, y
    return _DECODED[key]


def _cache_file(builder, split):
    """Where `split`'s decoded arrays are kept: named by the dataset, version, split, the
    names, sizes and modification times (seconds) of its TFDS files (so new files miss it)
    and the layout's version (v1: x uint8 [N, H, W, 3], y int64 [N], their sha256)."""
    root = os.environ.get(CACHE_ENV, "~/.cache/byol_tf")
    if root.lower() in ("", "0", "off", "none"):
        return None
    import hashlib
    import json

    import tensorflow as tf

    folder = str(builder.data_dir)  # (tf.io.gfile: local or gs://)
    prefix = f"{builder.name}-{split}."
    files = sorted(f for f in tf.io.gfile.listdir(folder) if f.startswith(prefix))
    stats = [tf.io.gfile.stat(f"{folder}/{f}") for f in files]
    stamp = hashlib.sha256(json.dumps(
        [(f, s.length, s.mtime_nsec) for f, s in zip(files, stats)]).encode()).hexdigest()
    return (pathlib.Path(root).expanduser() / "decoded" /
            f"{builder.name}-{builder.version}-{split}-{stamp[:16]}-v1.npz")


def _digest(x, y):
    import hashlib

    return hashlib.sha256(x.data).hexdigest() + hashlib.sha256(y.data).hexdigest()


def _read_cache(path):
    """The cached (x, y), or None when absent; a damaged or altered file is reported and
    ignored (the split is decoded again and the file rewritten)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as f:
            x, y, digest = f["x"], f["y"], str(f["sha256"])
        if digest != _digest(x, y):
            raise ValueError("its arrays do not match their checksum")
        return x, y
    except Exception as error:  # zip / format / key errors on a damaged file
        from absl import logging

        logging.warning("decoded-image cache %s is damaged (%s); decoding the dataset again",
                        path, error)
        return None


def _write_cache(path, x, y):
    """Writes atomically (a reader never sees a partial file); a cache that cannot be
    written (read-only home, full disk) only costs the decode next time."""
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=x, y=y, sha256=_digest(x, y))
    except OSError as error:
        from absl import logging

        logging.warning("decoded-image cache %s not written: %s", path, error)


def fits_in_memory(name, split, num_examples):
    """Whether `pretrain_dataset` keeps this TFDS split decoded in memory."""
    side = TFDS_DATASETS.get(name, (None, None))[1]
    return side is not None and num_examples * side * side * 3 <= IN_MEMORY_BYTES


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


def _tfds_load(tfds, name, split, data_dir):
    """`tfds.load(..., download=False)` with errors that say what is missing."""
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:
        raise DataError(f"TFDS dataset {name!r} unknown: {error}") from error
    if not builder.is_prepared():
        raise DataError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!s} (byol_tf does not "
            f"download): prepare it once with `tensorflow_datasets.builder({name!r}, "
            f"data_dir=DIR).download_and_prepare()` and pass data_dir=DIR (for CIFAR-10 "
            f"where TFDS cannot download, a clone of byol_tf has `python "
            f"scripts/prepare_cifar10.py DEST`, then data_dir=DEST/tfds)", ["data_dir"])
    if split not in builder.info.splits:
        raise DataError(f"TFDS dataset {name!r} has no split {split!r}; it has "
                        f"{sorted(builder.info.splits)}", ["split"])
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False), builder.info
