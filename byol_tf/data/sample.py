"""The bundled sample: 2,000 train and 500 test images of the real CIFAR-10, in the package."""

import pathlib

import numpy as np

SAMPLE_FILE = pathlib.Path(__file__).parents[1] / "assets" / "cifar10_sample.npz"
# The bundled sample's classes (it is CIFAR-10's), in label order.
SAMPLE_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                  "ship", "truck")



def load_sample(path=SAMPLE_FILE):
    """The bundled real-CIFAR-10 sample: dict of x_train [2000, 32, 32, 3] uint8,
    y_train [2000], x_test [500, 32, 32, 3], y_test [500] (and their original indices)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bundled sample missing: {path} (reinstall byol_tf)")
    sample = load_npz(path, "bundled sample")
    for split in ("train", "test"):
        if sample[f"x_{split}"].shape[1:] != (32, 32, 3):
            raise ValueError(f"bundled sample {path} is corrupt: bad {split} arrays (not 32 × 32)")
    return sample


def is_npz(name):
    """Whether the dataset name is an .npz file of arrays (`load_npz`)."""
    return str(name).endswith(".npz") and pathlib.Path(name).expanduser().is_file()


def load_npz(path, what="arrays file"):
    """An .npz file of a labelled dataset, checked: dict of x_train [N, H, W, 3] uint8,
    y_train [N] integer labels, x_test [M, H, W, 3], y_test [M] (other arrays kept as they
    are). ValueError names a damaged or malformed file."""
    path = pathlib.Path(path).expanduser()
    try:
        headers = npz_headers(path)
    except Exception as error:  # zipfile / format errors on a damaged file
        raise ValueError(f"{what} {path} is corrupt: {error}") from None
    for split in ("train", "test"):
        x, y = headers.get(f"x_{split}"), headers.get(f"y_{split}")
        if x is None or y is None or x[1] != np.uint8 or len(x[0]) != 4 or x[0][-1] != 3 \
                or len(y[0]) != 1 or x[0][0] != y[0][0] or x[0][0] == 0 or y[1].kind not in "iu":
            raise ValueError(f"{what} {path} is corrupt: bad {split} arrays (x_{split} must be "
                             f"uint8 [N, H, W, 3] and y_{split} integer labels [N], N ≥ 1)")
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except Exception as error:  # zipfile / value errors on a damaged file
        raise ValueError(f"{what} {path} is corrupt: {error}") from None


def npz_headers(path, max_ratio=64, small=64 * 2**20):
    """{name: (shape, dtype)} of the arrays in an .npz file, read from their headers without
    loading them. Raises ValueError for an array stored as Python objects, one whose header
    disagrees with its member's size, or one that inflates from its compressed bytes more
    than `max_ratio` times once past `small` bytes (images never compress that well: the
    file does not carry the data it declares)."""
    from numpy.lib import format as npy

    from byol_tf.files import open_zip

    headers = {}
    with open_zip(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            with archive.open(info) as member:
                version = npy.read_magic(member)
                read = (npy.read_array_header_1_0 if version == (1, 0)
                        else npy.read_array_header_2_0)
                shape, _, dtype = read(member)
                offset = member.tell()
            if dtype.hasobject:
                raise ValueError(f"array {name} holds Python objects (not loaded)")
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if info.file_size != offset + nbytes:
                raise ValueError(f"array {name} declares {nbytes:,} bytes of shape {shape} but "
                                 f"its member holds {info.file_size - offset:,}")
            if nbytes > small and nbytes > max_ratio * info.compress_size:
                raise ValueError(f"array {name} inflates to {nbytes:,} bytes from "
                                 f"{info.compress_size:,} (a zip bomb?)")
            headers[name] = (tuple(shape), dtype)
    return headers


def class_count(arrays):
    """The number of classes of `load_npz`'s arrays (largest label + 1)."""
    return int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
