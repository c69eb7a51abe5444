"""Input pipelines: the bundled CIFAR-10 sample, TFDS datasets, folders of images.

Fixed-size sources (the sample, cifar10, cifar100, stl10) yield uint8 `(images, labels)`
batches and BYOL draws both views inside its train step. Variable-size sources
(imagenet2012, image folders) cannot be batched before cropping, so the random resized
crop of each view runs per image in tf.data, and the rest of the augmentation (flip,
colour, blur, solarize, per sample) per batch: they yield `((view1, view2), labels)`.
"""

import os
import pathlib

import numpy as np

from byol_tf import augment as augment_lib

SAMPLE_FILE = pathlib.Path(__file__).parent / "assets" / "cifar10_sample.npz"
# TFDS name → (pretraining split, fixed image side or None, has labels in that split)
TFDS_DATASETS = {
    "cifar10": ("train", 32, True),
    "cifar100": ("train", 32, True),
    "stl10": ("unlabelled", 96, False),
    "imagenet2012": ("train", None, True),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# The bundled sample's classes (it is CIFAR-10's), in label order.
SAMPLE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck")


# ------------------------------------------------------------------ bundled sample
def load_sample(path=SAMPLE_FILE):
    """The bundled real-CIFAR-10 sample: dict of x_train [2000, 32, 32, 3] uint8,
    y_train [2000], x_test [500, 32, 32, 3], y_test [500] (and their original indices)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bundled sample missing: {path} (reinstall byol_tf)")
    try:
        with np.load(path) as f:
            sample = {k: f[k] for k in f.files}
    except Exception as error:  # zipfile / pickle / value errors on a damaged file
        raise ValueError(f"bundled sample {path} is corrupt: {error}") from error
    for split in ("train", "test"):
        x, y = sample.get(f"x_{split}"), sample.get(f"y_{split}")
        if x is None or y is None or x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3) \
                or len(x) != len(y) or len(x) == 0:
            raise ValueError(f"bundled sample {path} is corrupt: bad {split} arrays")
    return sample


# ------------------------------------------------------------------ arrays for evaluation
def load_arrays(name, data_dir=None, max_train=None, max_test=None, eval_folder=None,
                image_size=None):
    """(x_train, y_train, x_test, y_test) uint8 numpy arrays, for kNN / probes.

    name: "sample", a fixed-size TFDS dataset, or a folder of images with class
    sub-folders; a folder needs `eval_folder` (the test split, the same class sub-folders)
    and `image_size` (images are centre-cropped and resized to it, as the model's input)."""
    if os.path.isdir(os.path.expanduser(str(name))):
        if not eval_folder or not image_size:
            raise ValueError(f"evaluating on the folder {name} needs a labelled test folder "
                             "(--eval_dataset, with the same class sub-folders) and an image size")
        (x_train, y_train), classes = folder_arrays(name, image_size)
        (x_test, y_test), test_classes = folder_arrays(eval_folder, image_size)
        if test_classes != classes:
            raise ValueError(f"{eval_folder} has classes {test_classes}, {name} has {classes}: "
                             "the test folder needs the same class sub-folders")
    elif name == "sample":
        s = load_sample()
        x_train, y_train, x_test, y_test = s["x_train"], s["y_train"], s["x_test"], s["y_test"]
    else:
        if TFDS_DATASETS.get(name, (None, None))[1] is None:
            raise ValueError(f"load_arrays supports the sample and fixed-size TFDS datasets, "
                             f"not {name!r}")
        tfds = _tfds()
        arrays = []
        for split, cap in (("train", max_train), ("test", max_test)):
            key = _decoded_key(name, split, data_dir)
            if key in _DECODED or not cap:
                arrays += decoded_split(name, split, data_dir)
            else:  # a few examples: decode only those
                ds, _ = _tfds_load(tfds, name, split, data_dir)
                arrays += next(iter(tfds.as_numpy(ds.take(cap).batch(1_000_000))))
        x_train, y_train, x_test, y_test = arrays
    return (x_train[:max_train], y_train[:max_train], x_test[:max_test], y_test[:max_test])


# Fixed-size TFDS splits of at most this many bytes of uint8 pixels are decoded once per
# process and kept (read-only) in memory: pretraining then decodes no image per epoch, and
# the evaluation reuses the arrays (CIFAR-10's train split is 153.6 MB; STL-10's 100,000
# unlabelled images, 2.8 GB, stream from their files).
IN_MEMORY_BYTES = 1 << 30
_DECODED = {}
# ... and kept decoded on disk between processes, under $BYOL_TF_CACHE (default
# ~/.cache/byol_tf; "off" keeps nothing): CIFAR-10's 60,000 PNGs take ~7 s of wall time (11 s
# of CPU) to decode on 2 cores, its arrays ~0.7 s to read and check.
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(f, x=x, y=y, sha256=_digest(x, y))
        os.replace(tmp, path)
    except OSError as error:
        from absl import logging

        logging.warning("decoded-image cache %s not written: %s", path, error)
        tmp.unlink(missing_ok=True)


def fits_in_memory(name, split, num_examples):
    """Whether `pretrain_dataset` keeps this TFDS split decoded in memory."""
    side = TFDS_DATASETS.get(name, (None, None))[1]
    return side is not None and num_examples * side * side * 3 <= IN_MEMORY_BYTES


def class_names(name, data_dir=None, eval_folder=None):
    """Class names in label order of what `load_arrays(name, data_dir, eval_folder=...)`
    loads (a folder's: its sub-folders, sorted), for pictures and reports."""
    if os.path.isdir(os.path.expanduser(str(name))):
        root = pathlib.Path(eval_folder or name).expanduser()
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    if name == "sample":
        return list(SAMPLE_CLASSES)
    _, info = _tfds_load(_tfds(), name, "test", data_dir)
    return list(info.features["label"].names)


def folder_arrays(root, image_size):
    """((images uint8 [N, S, S, 3], labels [N]), class names) of a folder with one
    sub-folder per class; each image centre-cropped to a square and resized to S (the
    `ImageConverter` crop, without the normalisation). Unreadable files raise a ValueError
    naming them."""
    import tensorflow as tf

    from byol_tf.preprocessing import ImageConverter

    root = os.path.expanduser(str(root))
    ds, files, classes = _folder(root)
    if not classes:
        raise ValueError(f"{root} has no class sub-folders (one per class) for labels")
    crop = ImageConverter(image_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    images, labels = [], []
    try:
        for image, label in ds:  # images differ in size: one at a time
            x = crop(image[None])[0] * 255.0
            images.append(tf.cast(tf.round(x), tf.uint8).numpy())
            labels.append(int(label))
    except tf.errors.InvalidArgumentError:
        raise ValueError(f"{root}: {describe_bad_images(undecodable_images(files))}") from None
    return (np.stack(images), np.array(labels, np.int64)), classes


# ------------------------------------------------------------------ tf.data pipelines
def pretrain_dataset(name, batch_size, image_size=None, data_dir=None, split=None, seed=0,
                     shuffle_buffer=10_000, view1=augment_lib.VIEW1, view2=augment_lib.VIEW2,
                     repeat=False, skip_bad_images=False, in_memory=None):
    """A `tf.data.Dataset` for `BYOL.fit`, batched (drop_remainder) and prefetched.

    Args:
      name: "sample", a TFDS name (cifar10, cifar100, stl10, imagenet2012) or a folder.
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
    Returns:
      (dataset, info) with info = dict(num_examples, image_size, premade_views, num_classes,
      and for folders the image files used).
    """
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1; got {batch_size}")
    if name == "sample":
        s = load_sample()
        ds = tf.data.Dataset.from_tensor_slices((s["x_train"], s["y_train"].astype(np.int64)))
        info = dict(num_examples=len(s["x_train"]), image_size=32, premade_views=False,
                    num_classes=10)
    elif name in TFDS_DATASETS:
        tfds = _tfds()
        default_split, side, labelled = TFDS_DATASETS[name]
        split = split or default_split
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
    elif os.path.isdir(os.path.expanduser(name)):
        ds, files, classes = _folder(os.path.expanduser(name), skip_bad_images)
        info = dict(num_examples=len(files), image_size=None, premade_views=True,
                    num_classes=len(classes) if classes else None, files=files)
    else:
        raise ValueError(f"Unknown dataset {name!r}: use 'sample', one of "
                         f"{sorted(TFDS_DATASETS)} or an existing folder of images")
    if info["num_examples"] < batch_size:
        raise ValueError(f"dataset {name!r} has {info['num_examples']} examples, fewer than "
                         f"one batch of {batch_size}")
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
        ds = ds.map(_two_crops(image_size, view1, view2, seed), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.batch(batch_size, drop_remainder=True)
        ds = ds.map(_finish_views(view1, view2, seed))
    else:
        ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    # Shard by element across workers: single-file TFDS splits cannot be sharded by file.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE), info


def _two_crops(size, view1, view2, seed):
    """Per image (any size): two random resized crops, bicubic, as the official input."""
    import tensorflow as tf

    generator = tf.random.Generator.from_seed(seed)

    def crop(image, config):
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 → [0, 1]
        shape = tf.shape(image)
        u = generator.uniform((1, augment_lib.NUM_DRAWS))
        window = augment_lib.crop_window(u, tf.cast(shape[0], tf.float32),
                                         tf.cast(shape[1], tf.float32), config)
        y, x, h, w = (window[k][0] for k in ("crop_y", "crop_x", "crop_h", "crop_w"))
        patch = tf.image.resize(image[y:y + h, x:x + w], (size, size), method="bicubic")
        return tf.clip_by_value(patch, 0.0, 1.0)

    def fn(image, *label):
        # A 1-tuple when unlabelled, so that the next map gets the pair as one argument.
        return ((crop(image, view1), crop(image, view2)), *label)

    return fn


def _finish_views(view1, view2, seed):
    """Per batch: everything but the crop, per sample (crops are already taken)."""
    import keras

    generator = keras.random.SeedGenerator(seed + 1)

    def fn(views, *label):
        out = tuple(augment_lib.augment(v, augment_lib.without_crop(cfg), v.shape[1], generator)
                    for v, cfg in zip(views, (view1, view2)))
        return (out, *label) if label else out

    return fn


# First bytes of the formats tf.io.decode_image reads: JPEG, PNG, GIF, BMP.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def image_file_problem(path):
    """None if the file at `path` starts like a JPEG, PNG, GIF or BMP image, else what is
    wrong with it (a cheap check of its first bytes; see `undecodable_images`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if not head:
        return "empty file"
    if not head.startswith(IMAGE_SIGNATURES):
        return "not a JPEG, PNG, GIF or BMP image (unrecognised first bytes)"
    return None


def undecodable_images(files):
    """[(path, what is wrong)] for the files TensorFlow cannot decode as RGB images (a full
    decode of every file: for naming the culprit after a decode error)."""
    import tensorflow as tf

    bad = []
    for path in files:
        problem = image_file_problem(path)
        if problem is None:
            try:
                tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
            except tf.errors.OpError as error:
                problem = str(error).split("[Op:")[0].split("} ")[-1].strip()
        if problem:
            bad.append((path, problem))
    return bad


def describe_bad_images(bad, limit=5):
    shown = "; ".join(f"{path}: {problem}" for path, problem in bad[:limit])
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return f"{len(bad)} unreadable image file(s): {shown}{more}"


def _folder(root, skip_bad_images=False):
    """(dataset, image files, class names or None): images under `root` (recursively);
    labels from first-level sub-folders if every image is in one. Files
    that are not images (empty, another format) raise a ValueError naming them, or are left
    out with a warning when `skip_bad_images` (which also skips files that fail to decode
    later, e.g. truncated ones)."""
    import tensorflow as tf
    from absl import logging

    files = sorted(str(p) for p in pathlib.Path(root).rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    bad = [(f, problem) for f in files if (problem := image_file_problem(f))]
    if bad and not skip_bad_images:
        raise ValueError(f"{root}: {describe_bad_images(bad)}; remove them or pass "
                         "--skip_bad_images")
    if bad:
        logging.warning("%s: skipping %s", root, describe_bad_images(bad))
        skipped = {f for f, _ in bad}
        files = [f for f in files if f not in skipped]
        if not files:
            raise ValueError(f"no readable images under {root}")
    classes = sorted({pathlib.Path(f).relative_to(root).parts[0] for f in files
                      if len(pathlib.Path(f).relative_to(root).parts) > 1})
    labelled = classes and all(len(pathlib.Path(f).relative_to(root).parts) > 1 for f in files)

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image.set_shape((None, None, 3))
        return image

    if labelled:
        labels = [classes.index(pathlib.Path(f).relative_to(root).parts[0]) for f in files]
        ds = tf.data.Dataset.from_tensor_slices((files, labels))
        ds = ds.map(lambda p, y: (decode(p), tf.cast(y, tf.int64)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = tf.data.Dataset.from_tensor_slices(files).map(decode,
                                                           num_parallel_calls=tf.data.AUTOTUNE)
    if skip_bad_images:
        ds = ds.ignore_errors(log_warning=True)
    return ds, files, classes if labelled else None


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


def _tfds_load(tfds, name, split, data_dir):
    """`tfds.load(..., download=False)` with errors that say what is missing."""
    data_dir = os.path.expanduser(data_dir) if data_dir else None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:
        raise ValueError(f"TFDS dataset {name!r} unknown: {error}") from error
    if not builder.is_prepared():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!s} (downloads are "
            f"off). For CIFAR-10 run: python scripts/prepare_cifar10.py DEST, then pass "
            f"--data_dir=<DEST>/tfds")
    if split not in builder.info.splits:
        raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; it has "
                         f"{sorted(builder.info.splits)}")
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False), builder.info
