"""Writes the bundled sample `byol_tf/assets/cifar10_sample.npz`: class-balanced images drawn
from the real CIFAR-10 (`cifar10.npz` of `scripts/prepare_cifar10.py`), with their indices
into the original splits.

    python scripts/make_sample.py ~/.cache/byol_data/cifar10.npz
"""

import pathlib
import sys

import numpy as np

from byol_tf.data import SAMPLE_FILE


def make_sample(cifar10_npz, dest=SAMPLE_FILE, per_class_train=200, per_class_test=50, seed=0):
    """Writes the bundled sample: class-balanced images drawn from the real CIFAR-10
    (`cifar10.npz` of `prepare_cifar10.py`), with their indices into the original splits."""
    data = np.load(cifar10_npz)
    rng = np.random.default_rng(seed)

    def pick(y, per_class):
        idx = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]
        return np.sort(np.concatenate(idx))

    train_idx, test_idx = pick(data["y_train"], per_class_train), pick(data["y_test"], per_class_test)
    pathlib.Path(dest).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        dest, x_train=data["x_train"][train_idx], y_train=data["y_train"][train_idx],
        x_test=data["x_test"][test_idx], y_test=data["y_test"][test_idx],
        train_index=train_idx, test_index=test_idx)
    return dest


if __name__ == "__main__":
    print(make_sample(sys.argv[1]))
