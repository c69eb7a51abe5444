"""Evaluation protocols: weighted kNN, linear evaluation, fine-tuning, label subsets.

kNN follows the InstDisc / solo-learn protocol: cosine similarity between
l2-normalised representations, the k = 200 nearest training samples vote with
weight exp(similarity / T), T = 0.1.

Every function here takes the encoder as an `ImageEncoder` (images → embedding, see
`byol_tf.image_encoder`); a self-supervised model or a plain Keras encoder is turned into
one by `as_image_encoder`.
"""

import time
import weakref

import keras
import numpy as np

from byol_tf import compat
from byol_tf.image_encoder import ImageEncoder, as_image_encoder
from byol_tf.preprocessing import ImageConverter


def extract_features(model, images, batch_size=256, verbose=0):
    """Representations `[N, D]` (float32 numpy) of uint8 or [0, 1] images `[N, H, W, 3]`
    through the model's own input contract, batch norm in inference mode. `verbose`: 0
    silent, 1 a progress bar, 2 one line at the end (both end with the images per second)."""
    if len(images) == 0:
        raise ValueError("extract_features: no images")
    forward = _inference_forward(model)
    batch_size = min(batch_size, len(images))
    bar = keras.utils.Progbar(len(images), verbose=1, unit_name="image") if verbose == 1 else None
    started, out = time.perf_counter(), []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start:start + batch_size])
        if len(batch) < batch_size:  # one batch shape, one trace (samples are independent)
            batch = np.concatenate([batch, np.zeros_like(batch[:batch_size - len(batch)])])
        out.append(np.asarray(forward(batch))[:len(images) - start])
        if bar:
            bar.update(min(start + batch_size, len(images)))
    if verbose:
        seconds = time.perf_counter() - started
        print(f"features of {len(images)} images: {seconds:.1f} s, "
              f"{len(images) / max(seconds, 1e-9):.0f} images/s", flush=True)
    return np.concatenate(out).astype(np.float32)


_LAST_FORWARD = [None, None]  # [weak reference to the last model, its forward]


def _inference_forward(model):
    """images → features of `model` in inference mode; on TensorFlow one traced graph. The
    last model's is kept, so the calls for its train and test images trace once (the
    next model's replaces it: at most one model is held here)."""
    ref, forward = _LAST_FORWARD
    if ref is not None and ref() is model:
        return forward
    encoder = as_image_encoder(model)
    forward = lambda x: encoder(x, training=False)  # noqa: E731
    if keras.backend.backend() == "tensorflow":  # one graph instead of eager layer calls
        import tensorflow as tf

        forward = tf.function(forward, reduce_retracing=True)
    try:
        _LAST_FORWARD[:] = weakref.ref(model), forward
    except TypeError:  # (not weakly referable: not kept)
        _LAST_FORWARD[:] = None, None
    return forward


def nearest(train_features, test_features, k, chunk=1024):
    """(indices, cosine similarities), each `[M, k]`: the k most cosine-similar of
    `train_features [N, D]` for each of `test_features [M, D]`, most similar first (test
    features `chunk` at a time, so memory stays at chunk·N similarities)."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    train, indices, similarities = unit(np.asarray(train_features)), [], []
    for start in range(0, len(test_features), chunk):
        similarity = unit(np.asarray(test_features[start:start + chunk])) @ train.T
        top = np.argpartition(similarity, similarity.shape[1] - k, axis=1)[:, -k:]
        top_similarity = np.take_along_axis(similarity, top, axis=1)
        order = np.argsort(-top_similarity, axis=1, kind="stable")
        indices.append(np.take_along_axis(top, order, axis=1))
        similarities.append(np.take_along_axis(top_similarity, order, axis=1))
    return np.concatenate(indices), np.concatenate(similarities)


def knn_votes(train_features, train_labels, test_features, num_classes, k=200,
              temperature=0.1, chunk=1024):
    """Class votes `[M, C]` for `test_features [M, D]`: the k most cosine-similar of
    `train_features [N, D]` each add exp(similarity / T) to their class."""
    if len(train_features) == 0 or len(test_features) == 0:
        raise ValueError("knn: empty train or test features")
    top, similarity = nearest(train_features, test_features, min(k, len(train_features)), chunk)
    votes = np.zeros((len(test_features), num_classes))
    np.add.at(votes, (np.arange(len(top))[:, None], np.asarray(train_labels)[top]),
              np.exp(similarity / temperature))
    return votes


def knn_predict(train_features, train_labels, test_features, num_classes, k=200,
                temperature=0.1, chunk=1024):
    """Class predictions `[M]` (the class with most votes)."""
    return knn_votes(train_features, train_labels, test_features, num_classes, k, temperature,
                     chunk).argmax(1)


def knn_accuracy(encoder, x_train, y_train, x_test, y_test, k=200, temperature=0.1, top=1,
                 verbose=0):
    """Top-`top` kNN accuracy of a frozen encoder (a float; a dict {1: …, 5: …} when `top`
    is a tuple of ks); `verbose` as `extract_features`."""
    return knn_accuracy_of_features(extract_features(encoder, x_train, verbose=verbose), y_train,
                                    extract_features(encoder, x_test, verbose=verbose), y_test,
                                    k, temperature, top)


def knn_accuracy_of_features(train_features, y_train, test_features, y_test, k=200,
                             temperature=0.1, top=1):
    """`knn_accuracy` of features already extracted."""
    y_train, y_test = np.asarray(y_train).astype(np.int64), np.asarray(y_test).astype(np.int64)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    votes = knn_votes(train_features, y_train, test_features, num_classes, k, temperature)
    return votes_accuracy(votes, y_test, top)


def votes_accuracy(votes, y_test, top=1):
    """Top-`top` accuracy of class votes `[M, C]` (a float; a dict {1: …, 5: …} when `top` is
    a tuple of ks)."""
    ranked = np.argsort(-votes, axis=1)
    y_test = np.asarray(y_test).astype(np.int64)
    accuracy = {t: float(np.mean((ranked[:, :t] == y_test[:, None]).any(1)))
                for t in np.atleast_1d(top)}
    return accuracy if isinstance(top, tuple) else accuracy[top]


class KnnEvery(keras.callbacks.Callback):
    """kNN top-1 of the model's image encoder every `every` epochs and after the last one,
    added to the epoch's logs as `knn_top1` (so the run's history, `history.csv` and
    `curves.png` carry the learning curve). The latest measurement's features stay in
    `features` ([train [N, D], test [M, D]]), taken at optimizer step `features_step`, for
    an evaluation of the same weights to reuse.

    Args:
      arrays: (x_train, y_train, x_test, y_test), as `knn_accuracy`.
      every: int ≥ 1, epochs between measurements.
      last_epoch: int, the run's number of epochs (always measured there).
      k, temperature: as `knn_accuracy`.
    """

    def __init__(self, arrays, every, last_epoch, k=200, temperature=0.1):
        super().__init__()
        self.arrays, self.every, self.last_epoch = arrays, every, last_epoch
        self.k, self.temperature = k, temperature
        self.features, self.features_step = None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and ((epoch + 1) % self.every == 0 or epoch + 1 == self.last_epoch):
            x_train, y_train, x_test, y_test = self.arrays
            encoder = self.model.image_encoder()
            self.features = [extract_features(encoder, x) for x in (x_train, x_test)]
            self.features_step = compat.batch_count(self.model.optimizer)
            logs["knn_top1"] = knn_accuracy_of_features(
                self.features[0], y_train, self.features[1], y_test, self.k, self.temperature)


class ImagesPerSecond(keras.callbacks.Callback):
    """Adds the epoch's `images_per_second` (steps × `batch_size` / wall seconds) to its logs,
    where Keras' progress line (and any later callback) shows it."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size, self._started, self._steps = batch_size, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._started, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._started is not None:
            seconds = max(time.perf_counter() - self._started, 1e-9)
            logs["images_per_second"] = round(self._steps * self.batch_size / seconds, 1)


# ------------------------------------------------------------------ supervised protocols
def _classifier(model, num_classes, image_size, train_encoder, seed):
    """images → logits: [random resized crop + flip when training] → the `ImageEncoder`
    `model` → Dense."""
    import keras

    from byol_tf import augment
    from byol_tf.inputs import to_float_images

    class Classifier(keras.Model):
        def __init__(self):
            super().__init__()
            self.model = model
            self.seed_generator = keras.random.SeedGenerator(seed)
            self.head = keras.layers.Dense(num_classes, kernel_initializer="zeros", name="head")

        def call(self, images, training=False):
            if training:
                images = augment.augment(to_float_images(images), augment.CROP_ONLY, image_size,
                                         self.seed_generator)
            return self.head(self.model(images, training=training and train_encoder))

    model.encoder.trainable = train_encoder
    return Classifier()


def copy_image_encoder(model):
    """A copy of an `ImageEncoder` with its own weights (the original is left untouched)."""
    import keras

    encoder = keras.models.clone_model(model.encoder)
    encoder.set_weights(model.encoder.get_weights())
    return ImageEncoder(encoder, ImageConverter.from_config(model.converter.get_config()))


def centre_crop(images, fraction=0.875):
    """Test-time view: 32-px data as is; larger square images centre-cropped to `fraction` of
    their side and resized back (the official 224-px protocol), by the `ImageConverter`'s
    crop; uint8 stays uint8 (rounded)."""
    side = images.shape[1]
    if min(images.shape[1:3]) <= 32:
        return images
    crop = ImageConverter(side, crop_fraction=fraction, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = np.asarray(crop(images))
    return np.round(out * 255).astype(np.uint8) if images.dtype == np.uint8 else out


def supervised_eval(encoder, x_train, y_train, x_test, y_test, protocol="linear", epochs=80,
                    batch_size=256, base_lr=None, weight_decay=0.0, seed=0, verbose=0,
                    return_predictions=False):
    """Linear evaluation (frozen encoder, BN in inference mode) or fine-tuning (all
    trainable). SGD with Nesterov momentum 0.9, cosine LR from base·batch/256 (base 0.2
    linear, 0.01 fine-tune), train augmentation = random resized crop + flip.
    `verbose` as Keras' `fit` (each epoch's line then ends with its images per second).
    Returns dict(top1, top5, ...), with the predicted class of every test image
    (`predictions`, int [M]) when `return_predictions`."""
    import keras

    if protocol not in ("linear", "finetune"):
        raise ValueError(f"protocol must be 'linear' or 'finetune'; got {protocol!r}")
    if len(x_train) == 0 or len(x_test) == 0:
        raise ValueError("supervised_eval: empty train or test set")
    y_train, y_test = np.asarray(y_train).astype(np.int64), np.asarray(y_test).astype(np.int64)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    keras.utils.set_random_seed(seed)
    copy = copy_image_encoder(as_image_encoder(encoder))  # the caller's is left untouched
    model = _classifier(copy, num_classes, x_train.shape[1], protocol == "finetune", seed)
    base_lr = base_lr if base_lr is not None else (0.2 if protocol == "linear" else 0.01)
    steps = max(1, len(x_train) // batch_size) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(base_lr * batch_size / 256, steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True,
                                                 weight_decay=weight_decay or None),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseTopKCategoricalAccuracy(1, name="top1"),
                           keras.metrics.SparseTopKCategoricalAccuracy(
                               min(5, num_classes), name="top5")])
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
              verbose=verbose, callbacks=[ImagesPerSecond(batch_size)] if verbose else None)
    results = model.evaluate(centre_crop(x_test), y_test, batch_size=batch_size, verbose=0,
                             return_dict=True)
    out = dict(top1=float(results["top1"]), top5=float(results["top5"]), protocol=protocol,
               epochs=epochs, batch_size=batch_size, base_lr=base_lr, optimizer="sgd-nesterov-0.9",
               train_examples=len(x_train), test_examples=len(x_test))
    if return_predictions:
        logits = model.predict(centre_crop(x_test), batch_size=batch_size, verbose=0)
        out["predictions"] = np.argmax(logits, axis=-1)
    return out


def label_subset(labels, fraction, seed=0):
    """Indices of a fixed, seeded, class-balanced `fraction` of `labels` (≥ 1 a class)."""
    labels = np.asarray(labels)
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1]; got {fraction}")
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, int(round(len(members) * fraction)))
        picked.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(picked))
