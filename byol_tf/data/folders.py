"""Folders of images: one sub-folder per class for labels; unreadable files named (or
skipped), never silently dropped."""

import contextlib
import os
import pathlib

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
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


@contextlib.contextmanager
def bad_images_named(name, info):
    """Around reading the images of `pretrain_dataset(name)` (whose `info` it takes): a decode
    error raised as a ValueError that names the unreadable files."""
    try:
        yield
    except Exception as error:
        files = info.get("files")
        if not files:
            raise
        import tensorflow as tf

        bad = undecodable_images(files) if isinstance(error, tf.errors.InvalidArgumentError) else []
        if not bad:
            raise
        raise ValueError(f"{name}: {describe_bad_images(bad)}; remove them or pass "
                         "--skip_bad_images") from None


def describe_bad_images(bad, limit=5):
    shown = "; ".join(f"{path}: {problem}" for path, problem in bad[:limit])
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return f"{len(bad)} unreadable image file(s): {shown}{more}"


def read_folder(root, skip_bad_images=False):
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


def folder_arrays(root, image_size):
    """((images uint8 [N, S, S, 3], labels [N]), class names) of a folder with one
    sub-folder per class; each image centre-cropped to a square and resized to S (the
    `ImageConverter` crop, without the normalisation). Unreadable files raise a ValueError
    naming them."""
    import tensorflow as tf

    from byol_tf.preprocessing import ImageConverter

    root = os.path.expanduser(str(root))
    ds, files, classes = read_folder(root)
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
