"""Folders of images: one sub-folder per class for labels; unreadable files named (or
skipped), never silently dropped."""

import contextlib
import functools
import os
import pathlib

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# First bytes of the formats tf.io.decode_image reads: JPEG, PNG, GIF, BMP.
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


# Images with more pixels are refused before decoding (a small file can hold a huge image:
# a 10000 × 10000 PNG of flat colour is 300 KB and decodes to 300 MB, with more for the
# resize): the default of every `max_image_pixels` argument.
MAX_IMAGE_PIXELS = 40_000_000


class DataError(ValueError):
    """A problem with a dataset, in the library's terms. `arguments`: the spellings of the
    keyword arguments its message names (e.g. "skip_bad_images=True"), so that a command can
    name its own flags instead (`byol_tf.cli.in_flag_terms`)."""

    def __init__(self, message, arguments=()):
        super().__init__(message)
        self.arguments = tuple(arguments)


SKIP_BAD = "skip_bad_images=True"


def image_size_of(head):
    """(width, height) from the first bytes of a PNG, GIF, BMP or JPEG file, or None when
    they do not say."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head.startswith((b"GIF87a", b"GIF89a")) and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head.startswith(b"BM") and len(head) >= 26:
        return (abs(int.from_bytes(head[18:22], "little", signed=True)),
                abs(int.from_bytes(head[22:26], "little", signed=True)))
    if head.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 <= len(head) and head[i] == 0xFF:
            marker = head[i + 1]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                return (int.from_bytes(head[i + 7:i + 9], "big"),
                        int.from_bytes(head[i + 5:i + 7], "big"))
            i += 2 + int.from_bytes(head[i + 2:i + 4], "big")
    return None


def image_file_problem(path, max_image_pixels=MAX_IMAGE_PIXELS):
    """None if the file at `path` starts like a JPEG, PNG, GIF or BMP image of at most
    `max_image_pixels` pixels, else what is wrong with it (a cheap check of its first bytes;
    see `undecodable_images`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            if head.startswith(b"\xff\xd8") and image_size_of(head) is None:
                head += f.read(1 << 16)  # (a JPEG's metadata may come before its size)
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if not head:
        return "empty file"
    if not head.startswith(IMAGE_SIGNATURES):
        return "not a JPEG, PNG, GIF or BMP image (unrecognised first bytes)"
    size = image_size_of(head)
    if size and size[0] * size[1] > max_image_pixels:
        return (f"{size[0]} × {size[1]} = {size[0] * size[1]:,} pixels, over the limit of "
                f"{max_image_pixels:,} (max_image_pixels)")
    return None


def undecodable_images(files, max_image_pixels=MAX_IMAGE_PIXELS):
    """[(path, what is wrong)] for the files TensorFlow cannot decode as RGB images (a full
    decode of every file: for naming the culprit after a decode error)."""
    import tensorflow as tf

    bad = []
    for path in files:
        problem = image_file_problem(path, max_image_pixels)
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
    error raised as a `DataError` that names the unreadable files."""
    try:
        yield
    except Exception as error:
        files = info.get("files")
        if not files:
            raise
        import tensorflow as tf

        bad = (undecodable_images(files, info.get("max_image_pixels", MAX_IMAGE_PIXELS))
               if isinstance(error, tf.errors.InvalidArgumentError) else [])
        if not bad:
            raise
        raise DataError(f"{name}: {describe_bad_images(bad)}; remove them or pass {SKIP_BAD}",
                        [SKIP_BAD]) from None


def describe_bad_images(bad, limit=5):
    shown = "; ".join(f"{path}: {problem}" for path, problem in bad[:limit])
    more = f" (and {len(bad) - limit} more)" if len(bad) > limit else ""
    return f"{len(bad)} unreadable image file(s): {shown}{more}"


@functools.lru_cache(maxsize=16)
def _listing(root, skip_bad_images, max_image_pixels, stamp):
    from absl import logging

    files = sorted(str(p) for p in pathlib.Path(root).rglob("*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    bad = [(f, problem) for f in files if (problem := image_file_problem(f, max_image_pixels))]
    if bad and not skip_bad_images:
        raise DataError(f"{root}: {describe_bad_images(bad)}; remove them or pass {SKIP_BAD}",
                        [SKIP_BAD])
    if bad:
        logging.warning("%s: skipping %s", root, describe_bad_images(bad))
        skipped = {f for f, _ in bad}
        files = [f for f in files if f not in skipped]
        if not files:
            raise DataError(f"no readable images under {root}")
    classes = sorted({pathlib.Path(f).relative_to(root).parts[0] for f in files
                      if len(pathlib.Path(f).relative_to(root).parts) > 1})
    labelled = classes and all(len(pathlib.Path(f).relative_to(root).parts) > 1 for f in files)
    return tuple(files), tuple(classes) if labelled else None


def list_folder(root, skip_bad_images=False, max_image_pixels=MAX_IMAGE_PIXELS):
    """(image files, class names or None) of a folder: the images under `root` (recursively),
    each checked by its first bytes (`image_file_problem`); labels from first-level
    sub-folders when every image is in one. Listed once per process while the folder's
    modification times are unchanged."""
    root = str(root)
    try:  # (the folder's and its sub-folders' modification times: a file added changes one)
        stamp = tuple(os.stat(d).st_mtime_ns for d in (root, *sorted(
            e.path for e in os.scandir(root) if e.is_dir())))
    except OSError as error:
        raise DataError(f"{root}: {error.strerror}") from None
    files, classes = _listing(root, bool(skip_bad_images), int(max_image_pixels), stamp)
    return list(files), list(classes) if classes is not None else None


def read_folder(root, skip_bad_images=False, max_image_pixels=MAX_IMAGE_PIXELS):
    """(dataset, image files, class names or None): images under `root` (recursively);
    labels from first-level sub-folders if every image is in one. Files
    that are not images (empty, another format) raise a ValueError naming them, or are left
    out with a warning when `skip_bad_images` (which also skips files that fail to decode
    later, e.g. truncated ones)."""
    import tensorflow as tf

    files, classes = list_folder(root, skip_bad_images, max_image_pixels)
    labelled = classes is not None

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


def folder_arrays(root, image_size, skip_bad_images=False, max_image_pixels=MAX_IMAGE_PIXELS):
    """((images uint8 [N, S, S, 3], labels [N]), class names) of a folder with one
    sub-folder per class; each image centre-cropped to a square and resized to S (the
    `ImageConverter` crop, without the normalisation). Unreadable files raise a ValueError
    naming them, or are left out with a warning when `skip_bad_images`."""
    import tensorflow as tf

    from byol_tf.preprocessing import ImageConverter

    root = os.path.expanduser(str(root))
    ds, files, classes = read_folder(root, skip_bad_images, max_image_pixels)
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
        bad = undecodable_images(files, max_image_pixels)
        raise DataError(f"{root}: {describe_bad_images(bad)}; remove them or pass {SKIP_BAD}",
                        [SKIP_BAD]) from None
    return (np.stack(images), np.array(labels, np.int64)), classes
