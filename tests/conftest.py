import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pathlib

import pytest


@pytest.fixture(scope="session")
def cifar10_dir():
    """DEST of `../shared/data/prepare_cifar10.py` ($BYOL_DATA_DIR or ~/.cache/byol_data).

    Missing data fails the test under CI (where .ci/run prepares it) and skips elsewhere."""
    dest = pathlib.Path(os.environ.get("BYOL_DATA_DIR", "~/.cache/byol_data")).expanduser()
    if not (dest / "tfds" / "cifar10").exists():
        message = f"real CIFAR-10 not prepared in {dest}: run python ../shared/data/prepare_cifar10.py"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return dest
