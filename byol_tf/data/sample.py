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
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as error:  # zipfile / pickle / value errors on a damaged file
        raise ValueError(f"{what} {path} is corrupt: {error}") from error
    for split in ("train", "test"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None or y is None or x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 \
                or len(x) != len(y) or len(x) == 0 or y.dtype.kind not in "iu":
            raise ValueError(f"{what} {path} is corrupt: bad {split} arrays (x_{split} must be "
                             f"uint8 [N, H, W, 3] and y_{split} integer labels [N], N ≥ 1)")
    return arrays


def class_count(arrays):
    """The number of classes of `load_npz`'s arrays (largest label + 1)."""
    return int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
