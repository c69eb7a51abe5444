"""The pictures a run leaves for a user to look at: `curves.png`, `neighbours.png`,
`confusion.png`.

- `curves(history, path)`: per-epoch loss, accuracies (online probe, kNN where measured),
  projection_std, learning rate and τ, one panel each (matplotlib).
- `neighbours(...)`: one query test image per class, each followed by its nearest training
  images in the embedding (cosine similarity), a green frame on those of the query's
  class, red on the others, labels under every image. Composed pixel for pixel (Pillow):
  image i of a row sits at a fixed offset, scaled by `zoom` with nearest-neighbour pixels,
  so a test can read the grid back (`cell_box`).
- `confusion(labels, predictions, class_names, path)`: the confusion matrix, rows the true
  class, each row normalised, counts in the cells (matplotlib).
"""

import numpy as np

GREEN, RED, WHITE, BLACK = (0, 160, 0), (210, 0, 0), (255, 255, 255), (0, 0, 0)
FRAME, GAP, LABEL_HEIGHT, QUERY_GAP = 3, 4, 14, 16
CURVE_PANELS = (("loss", ("loss",)), ("accuracy", ("probe_accuracy", "knn_top1")),
                ("projection_std", ("projection_std",)), ("learning rate", ("learning_rate",)),
                ("τ (target EMA)", ("tau",)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def curves(history, path, title=""):
    """Writes `path` (PNG, 1500×300 px): one panel per quantity of `history`, a list of
    per-epoch dicts (`RunHistory.epochs`; epochs without a value, e.g. kNN measured every few
    epochs, are skipped). Panels with no value at all are left out."""
    if not history:
        raise ValueError("curves: an empty history (no completed epoch)")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    panels = [(name, keys) for name, keys in CURVE_PANELS
              if any(row.get(k) is not None for row in history for k in keys)]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 3), dpi=100, squeeze=False)
    for ax, (name, keys) in zip(axes[0], panels):
        for key in keys:
            points = [(i + 1, row[key]) for i, row in enumerate(history)
                      if row.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o" if len(points) < 30 else None,
                        markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # 3-digit epochs fit
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def first_of_each_class(labels, num_classes):
    """Index of the first example of each class `[C]` (classes absent are left out)."""
    labels = np.asarray(labels)
    return np.array([int(np.flatnonzero(labels == c)[0]) for c in range(num_classes)
                     if (labels == c).any()])


def neighbour_grid(train_features, train_images, train_labels, test_features, test_images,
                   test_labels, class_names, path, k=8):
    """`neighbours.png` of an embedding: the first test image of each class and its k
    nearest training images (`byol_tf.evaluation.nearest`, the kNN's own search). Returns
    (query indices [R], neighbour indices [R, k])."""
    from byol_tf.evaluation import nearest

    queries = first_of_each_class(test_labels, len(class_names))
    found, _ = nearest(train_features, np.asarray(test_features)[queries], k)
    train_labels = np.asarray(train_labels)
    neighbours(np.asarray(test_images)[queries], np.asarray(test_labels)[queries],
               np.asarray(train_images)[found], train_labels[found], class_names, path)
    return queries, found


def cell_box(row, column, image_size, zoom):
    """(left, top) pixel of the image in grid cell (row, column); column 0 is the query."""
    side = image_size * zoom + 2 * FRAME
    left = GAP + column * (side + GAP) + (QUERY_GAP if column else 0) + FRAME
    top = GAP + row * (side + LABEL_HEIGHT + GAP) + FRAME
    return left, top


def neighbours(query_images, query_labels, neighbour_images, neighbour_labels, class_names,
               path, zoom=3):
    """Writes `path` (PNG): row r shows `query_images[r]` (uint8 `[R, H, W, 3]`) then
    `neighbour_images[r]` (uint8 `[R, K, H, W, 3]`), framed green when the neighbour's label
    equals the query's, red otherwise; returns the image size (width, height)."""
    from PIL import Image, ImageDraw

    query_images, neighbour_images = np.asarray(query_images), np.asarray(neighbour_images)
    rows, k, size = neighbour_images.shape[0], neighbour_images.shape[1], query_images.shape[1]
    if query_images.dtype != np.uint8 or neighbour_images.dtype != np.uint8:
        raise ValueError("neighbours: images must be uint8 [.., H, W, 3]")
    side = size * zoom + 2 * FRAME
    width = cell_box(0, k, size, zoom)[0] + size * zoom + FRAME + GAP
    height = GAP + rows * (side + LABEL_HEIGHT + GAP)
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    for r in range(rows):
        cells = [(query_images[r], query_labels[r], BLACK)] + [
            (neighbour_images[r, j], neighbour_labels[r][j],
             GREEN if neighbour_labels[r][j] == query_labels[r] else RED) for j in range(k)]
        for c, (image, label, colour) in enumerate(cells):
            left, top = cell_box(r, c, size, zoom)
            draw.rectangle([left - FRAME, top - FRAME, left + size * zoom + FRAME - 1,
                            top + size * zoom + FRAME - 1], fill=colour)
            canvas.paste(Image.fromarray(image).resize((size * zoom, size * zoom),
                                                       Image.NEAREST), (left, top))
            draw.text((left - FRAME, top + size * zoom + FRAME), str(class_names[int(label)])[:10],
                      fill=colour if c else BLACK)
    canvas.save(path, format="PNG")
    return canvas.size


def confusion(labels, predictions, class_names, path, title=""):
    """Writes `path` (PNG, 700×600 px): the confusion matrix of `predictions` against
    `labels` (ints in [0, C)); returns the matrix of counts `[C, C]` (row: true class)."""
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    num_classes = len(class_names)
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    rates = counts / counts.sum(1, keepdims=True).clip(1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    if num_classes <= 20:
        for i in range(num_classes):
            for j in range(num_classes):
                ax.text(j, i, counts[i, j], ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
        ax.set_xticks(range(num_classes), [str(n)[:10] for n in class_names], rotation=45,
                      ha="right", fontsize=8)
        ax.set_yticks(range(num_classes), [str(n)[:10] for n in class_names], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {np.trace(counts) / max(counts.sum(), 1):.3f}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return counts
