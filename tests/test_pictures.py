"""The run's pictures (byol_tf/pictures.py): valid PNGs of the stated sizes, and a neighbour
grid that shows, pixel for pixel, the nearest neighbours computed here independently."""

import numpy as np
import pytest
from PIL import Image

from byol_tf import evaluation
from byol_tf.training import pictures
from helpers.png import png_size


def test_curves_png(tmp_path):
    history = [dict(loss=4.0 - e, projection_std=0.06, learning_rate=0.1 * e, tau=0.99 + e / 1e3,
                    probe_accuracy=0.1 * e, **({"knn_top1": 0.2 + e / 10} if e % 2 else {}))
               for e in range(6)]
    pictures.curves(history, tmp_path / "curves.png", title="run")
    assert png_size(tmp_path / "curves.png") == (1500, 300)
    with pytest.raises(ValueError, match="empty history"):
        pictures.curves([], tmp_path / "none.png")


def test_nearest_matches_a_full_sort():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(300, 16)), rng.normal(size=(7, 16))
    cos = (test / np.linalg.norm(test, axis=1, keepdims=True)) @ (
        train / np.linalg.norm(train, axis=1, keepdims=True)).T
    expected = np.argsort(-cos, axis=1)[:, :8]
    for chunk in (1024, 3):  # one chunk, and test features a few at a time
        found, similarity = evaluation.nearest(train, test, 8, chunk=chunk)
        np.testing.assert_array_equal(found, expected)
        np.testing.assert_allclose(similarity, np.take_along_axis(cos, expected, 1), rtol=1e-6)


def test_neighbour_grid_shows_the_nearest_images(tmp_path):
    rng = np.random.default_rng(0)
    num_classes, k, size, zoom = 4, 8, 8, 3
    train_images = rng.integers(0, 256, (120, size, size, 3), dtype=np.uint8)
    test_images = rng.integers(0, 256, (30, size, size, 3), dtype=np.uint8)
    train_labels, test_labels = rng.integers(0, num_classes, 120), rng.integers(0, num_classes, 30)
    train_features, test_features = rng.normal(size=(120, 5)), rng.normal(size=(30, 5))
    names = ["cat", "dog", "ship", "frog"]
    path = tmp_path / "neighbours.png"

    queries, found = pictures.neighbour_grid(train_features, train_images, train_labels,
                                             test_features, test_images, test_labels, names,
                                             path, k=k)

    expected_queries = [next(i for i, y in enumerate(test_labels) if y == c)
                        for c in range(num_classes)]
    np.testing.assert_array_equal(queries, expected_queries)
    for row, q in enumerate(expected_queries):  # the k nearest by cosine, brute force
        sims = [float(test_features[q] @ t / np.linalg.norm(test_features[q]) / np.linalg.norm(t))
                for t in train_features]
        np.testing.assert_array_equal(found[row], np.argsort(sims)[::-1][:k])

    grid = np.asarray(Image.open(path).convert("RGB"))
    width, height = png_size(path)
    assert grid.shape == (height, width, 3)
    for row, q in enumerate(expected_queries):
        cells = [(test_images[q], None)] + [(train_images[j], train_labels[j] == test_labels[q])
                                             for j in found[row]]
        for column, (image, correct) in enumerate(cells):
            left, top = pictures.cell_box(row, column, size, zoom)
            shown = grid[top:top + size * zoom, left:left + size * zoom]
            np.testing.assert_array_equal(shown, image.repeat(zoom, 0).repeat(zoom, 1))
            frame = tuple(grid[top - 1, left + 2])
            if correct is not None:
                assert frame == (pictures.GREEN if correct else pictures.RED)


def test_confusion_png_counts(tmp_path):
    labels = np.array([0, 0, 1, 1, 1, 2])
    predicted = np.array([0, 1, 1, 1, 2, 2])
    counts = pictures.confusion(labels, predicted, ["a", "b", "c"], tmp_path / "c.png")
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    assert png_size(tmp_path / "c.png") == (700, 600)
