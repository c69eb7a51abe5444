"""Frozen-encoder evaluation: features in inference mode and weighted kNN.

kNN follows the InstDisc / solo-learn protocol: cosine similarity between
l2-normalised representations, the k = 200 nearest training samples vote with
weight exp(similarity / T), T = 0.1.
"""

import numpy as np

from byol_tf.augment import to_float_images
from byol_tf.byol import IMAGENET_MEAN, IMAGENET_STD


def extract_features(encoder, images, batch_size=256):
    """Encoder representations `[N, D]` (float32 numpy) of uint8 or [0, 1] images,
    normalised as in training, batch norm in inference mode."""
    if len(images) == 0:
        raise ValueError("extract_features: no images")
    out = []
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    for start in range(0, len(images), batch_size):
        batch = np.asarray(to_float_images(images[start:start + batch_size]))
        out.append(np.asarray(encoder((batch - mean) / std, training=False)))
    return np.concatenate(out).astype(np.float32)


def knn_predict(train_features, train_labels, test_features, num_classes, k=200,
                temperature=0.1, chunk=1024):
    """Class predictions `[M]` for `test_features [M, D]` from `train_features [N, D]`."""
    if len(train_features) == 0 or len(test_features) == 0:
        raise ValueError("knn_predict: empty train or test features")
    k = min(k, len(train_features))
    train = train_features / np.linalg.norm(train_features, axis=1, keepdims=True).clip(1e-12)
    predictions = []
    for start in range(0, len(test_features), chunk):
        test = test_features[start:start + chunk]
        test = test / np.linalg.norm(test, axis=1, keepdims=True).clip(1e-12)
        similarity = test @ train.T
        top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(similarity, top, axis=1) / temperature)
        votes = np.zeros((len(test), num_classes))
        np.add.at(votes, (np.arange(len(test))[:, None], train_labels[top]), weights)
        predictions.append(votes.argmax(1))
    return np.concatenate(predictions)


def knn_accuracy(encoder, x_train, y_train, x_test, y_test, k=200, temperature=0.1):
    """Top-1 kNN accuracy of a frozen encoder."""
    y_train, y_test = np.asarray(y_train).astype(np.int64), np.asarray(y_test).astype(np.int64)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    predictions = knn_predict(extract_features(encoder, x_train), y_train,
                              extract_features(encoder, x_test), num_classes, k, temperature)
    return float(np.mean(predictions == y_test))
