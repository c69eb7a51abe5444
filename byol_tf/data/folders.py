"""Folders of images: one sub-folder per class for labels; unreadable files named (or
skipped), never silently dropped."""

import contextlib
import functools
import os
import pathlib
import stat

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


def _gif_extent(f):
    """(canvas width, canvas height, pixels) of a GIF: the canvas holds the logical screen and
    every frame where it is placed; pixels is the larger of the canvas and all frames
    together (giflib, inside TensorFlow's decoder, reads every frame into memory)."""
    head = f.read(13)
    if len(head) < 13:
        return None
    width, height = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head[10] & 0x80:  # global colour table
        f.seek(3 << ((head[10] & 7) + 1), os.SEEK_CUR)
    frames = 0
    while (block := f.read(1)) not in (b"", b";"):
        if block == b"!":  # extension: a label, then data sub-blocks
            f.read(1)
        elif block == b",":  # image descriptor
            d = f.read(9)
            if len(d) < 9:
                return None
            left, top, w, h = (int.from_bytes(d[i:i + 2], "little") for i in range(0, 8, 2))
            width, height, frames = max(width, left + w), max(height, top + h), frames + w * h
            if d[8] & 0x80:  # local colour table
                f.seek(3 << ((d[8] & 7) + 1), os.SEEK_CUR)
            f.read(1)  # LZW minimum code size, then the data sub-blocks
        else:
            return None  # not a block giflib reads
        while (size := f.read(1)) not in (b"", b"\0"):
            f.seek(size[0], os.SEEK_CUR)
    return width, height, max(width * height, frames)


def _jpeg_extent(f):
    """(width, height, pixels) from a JPEG's frame header, wherever its segments put it."""
    f.seek(2)
    while True:
        marker = f.read(2)
        while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0x01 or 0xD0 <= kind <= 0xD7:  # markers without a segment
            continue
        if kind in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        length = int.from_bytes(f.read(2), "big")
        if length < 2:  # (a length counts its own two bytes)
            return None
        if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):  # start of frame
            frame = f.read(5)
            if len(frame) < 5:
                return None
            height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
            return width, height, width * height
        f.seek(length - 2, os.SEEK_CUR)


def image_extent(f):
    """(width, height, pixels) of the image in the binary file `f`, read from its bytes without
    decoding: pixels is what TensorFlow's decoder holds at once (width × height; for a GIF, at
    least all its frames together). None when the bytes are not a PNG, GIF, BMP or JPEG
    whose size they state (e.g. a damaged header)."""
    head = f.read(26)
    f.seek(0)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    elif head.startswith(b"BM") and len(head) >= 26:
        width, height = (abs(int.from_bytes(head[i:i + 4], "little", signed=True))
                         for i in (18, 22))
    elif head.startswith((b"GIF87a", b"GIF89a")):
        return _gif_extent(f)
    elif head.startswith(b"\xff\xd8"):
        return _jpeg_extent(f)
    else:
        return None
    return width, height, width * height


def image_file_problem(path, max_image_pixels=MAX_IMAGE_PIXELS):
    """None if the file at `path` is a JPEG, PNG, GIF or BMP image of at most
    `max_image_pixels` pixels (`image_extent`: its frames and canvas, wherever the file states
    them), else what is wrong with it. Reads no pixel data; see `undecodable_images`."""
    try:
        os.fsdecode(path).encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8, which TensorFlow cannot open (rename it)"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "not a regular file (a pipe, device or folder)"
        with open(path, "rb") as f:
            head = f.read(8)
            if not head:
                return "empty file"
            if not head.startswith(IMAGE_SIGNATURES):
                return "not a JPEG, PNG, GIF or BMP image (unrecognised first bytes)"
            f.seek(0)
            extent = image_extent(f)
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if extent is None:
        return "no image size in its header (damaged or truncated)"
    width, height, pixels = extent
    if pixels > max_image_pixels:
        size = (f"{width} × {height} = {pixels:,} pixels" if pixels == width * height else
                f"{width} × {height}, frames of {pixels:,} pixels in all")
        return f"{size}, over the limit of {max_image_pixels:,} (max_image_pixels)"
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
    def printable(path):  # (a name that is not UTF-8 shown with \x escapes)
        return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8",
                                                                           "backslashreplace")

    shown = "; ".join(f"{printable(path)}: {problem}" for path, problem in bad[:limit])
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

    def square(image, label):  # images differ in size: cropped one by one, in parallel
        return tf.cast(tf.round(crop(image[None])[0] * 255.0), tf.uint8), label

    images, labels = [], []
    try:
        for x, label in ds.map(square, num_parallel_calls=tf.data.AUTOTUNE).batch(256):
            images.append(x.numpy())
            labels.append(label.numpy())
    except tf.errors.InvalidArgumentError:
        bad = undecodable_images(files, max_image_pixels)
        raise DataError(f"{root}: {describe_bad_images(bad)}; remove them or pass {SKIP_BAD}",
                        [SKIP_BAD]) from None
    return (np.concatenate(images), np.concatenate(labels).astype(np.int64)), classes
