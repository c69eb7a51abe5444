"""Folders of images for the tests."""

import numpy as np


def jpeg_folder(root, count, side=224):
    """`count` smooth JPEGs of `side` pixels in two class sub-folders."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, side, dtype=np.float32)
    for i in range(count):
        phase = rng.uniform(0, 6, 3)
        image = 127.5 * (1 + np.sin(6 * grid[:, None, None] + phase + 4 * grid[None, :, None]))
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(tf.io.encode_jpeg(image.astype(np.uint8)).numpy())
    return root
