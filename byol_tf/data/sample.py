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
