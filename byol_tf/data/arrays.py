"""Whole datasets as uint8 numpy arrays, for the evaluations (kNN, linear, pictures)."""

from byol_tf.data import tfds as tfds_source
from byol_tf.data.folders import DataError, folder_arrays
from byol_tf.data.sample import SAMPLE_CLASSES, class_count
from byol_tf.data.sources import DESCRIPTIONS, Source
from byol_tf.data.tfds import TFDS_DATASETS, _tfds, _tfds_load, decoded_split


def load_arrays(name, data_dir=None, max_train=None, max_test=None, eval_folder=None,
                image_size=None, skip_bad_images=False):
    """(x_train, y_train, x_test, y_test) uint8 numpy arrays, for kNN / probes.

    name: a `Source`, or what `Source.of` takes (with `data_dir`, `eval_folder`,
    `skip_bad_images`): the sample, an .npz file of arrays, a fixed-size TFDS dataset, or a
    folder of images with class sub-folders and its `eval_folder` (the test split, the same
    class sub-folders); a folder's images are centre-cropped and resized to `image_size`
    (the model's input side)."""
    source = Source.of(name, data_dir=data_dir, eval_folder=eval_folder,
                       skip_bad_images=skip_bad_images)
    if source.kind == "folder":
        source.check_eval_folder()
        if not image_size:
            raise DataError(f"evaluating on the folder {source.name} needs an image_size",
                            ["image_size"])
        (x_train, y_train), _ = folder_arrays(source.path, image_size, source.skip_bad_images,
                                              source.max_image_pixels)
        (x_test, y_test), _ = folder_arrays(source.eval_folder, image_size,
                                            source.skip_bad_images, source.max_image_pixels)
    elif source.kind == "arrays":
        s = source.arrays()
        x_train, y_train, x_test, y_test = s["x_train"], s["y_train"], s["x_test"], s["y_test"]
    else:
        name, data_dir = source.name, source.data_dir
        if TFDS_DATASETS[name][1] is None:
            raise DataError(f"{name!r} has images of varying size: evaluations take the sample, "
                            "fixed-size TFDS datasets, arrays or folders of images")
        tfds = _tfds()
        arrays = []
        for split, cap in (("train", max_train), ("test", max_test)):
            key = tfds_source._decoded_key(name, split, data_dir)
            if key in tfds_source._DECODED or not cap:
                arrays += decoded_split(name, split, data_dir)
            else:  # a few examples: decode only those
                ds, _ = _tfds_load(tfds, name, split, data_dir)
                arrays += next(iter(tfds.as_numpy(ds.take(cap).batch(1_000_000))))
        x_train, y_train, x_test, y_test = arrays
    return (x_train[:max_train], y_train[:max_train], x_test[:max_test], y_test[:max_test])


def check_same_classes(folder, eval_folder):
    """Raises a `DataError` unless the two folders have the same class sub-folders (the ones
    holding images), naming the differences."""
    Source.of(folder, eval_folder=eval_folder).check_eval_folder()


def class_names(name, data_dir=None, eval_folder=None):
    """Class names in label order of what `load_arrays(name, data_dir, eval_folder=...)`
    loads (a folder's: its sub-folders, sorted), for pictures and reports."""
    source = Source.of(name, data_dir=data_dir, eval_folder=eval_folder)
    if source.kind == "folder":
        root = Source.of(source.eval_folder or source.name).path
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    if source.name == "sample":
        return list(SAMPLE_CLASSES)
    if source.kind == "arrays":
        return [str(label) for label in range(class_count(source.arrays()))]
    _, info = _tfds_load(_tfds(), source.name, "test", source.data_dir)
    if "label" not in info.features:
        raise DataError(f"{source.name!r} is {DESCRIPTIONS['tfds']} without labels")
    return list(info.features["label"].names)
