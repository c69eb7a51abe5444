"""Whole datasets as uint8 numpy arrays, for the evaluations (kNN, linear, pictures)."""

import os
import pathlib

from byol_tf.data.folders import IMAGE_EXTENSIONS, folder_arrays
from byol_tf.data.sample import SAMPLE_CLASSES, class_count, is_npz, load_npz, load_sample
from byol_tf.data import tfds as tfds_source
from byol_tf.data.tfds import TFDS_DATASETS, _tfds, _tfds_load, decoded_split

def load_arrays(name, data_dir=None, max_train=None, max_test=None, eval_folder=None,
                image_size=None, skip_bad_images=False):
    """(x_train, y_train, x_test, y_test) uint8 numpy arrays, for kNN / probes.

    name: "sample", an .npz file of arrays, a fixed-size TFDS dataset, or a folder of images with class
    sub-folders; a folder needs `eval_folder` (the test split, the same class sub-folders)
    and `image_size` (images are centre-cropped and resized to it, as the model's input);
    `skip_bad_images` leaves a folder's unreadable files out (with a warning) instead of
    raising."""
    if os.path.isdir(os.path.expanduser(str(name))):
        if not eval_folder or not image_size:
            raise ValueError(f"evaluating on the folder {name} needs a labelled test folder "
                             "(--eval_dataset, with the same class sub-folders) and an image size")
        check_same_classes(name, eval_folder)
        (x_train, y_train), classes = folder_arrays(name, image_size, skip_bad_images)
        (x_test, y_test), test_classes = folder_arrays(eval_folder, image_size, skip_bad_images)
    elif name == "sample" or is_npz(name):
        s = load_sample() if name == "sample" else load_npz(name)
        x_train, y_train, x_test, y_test = s["x_train"], s["y_train"], s["x_test"], s["y_test"]
    else:
        if TFDS_DATASETS.get(name, (None, None))[1] is None:
            raise ValueError(f"load_arrays supports the sample and fixed-size TFDS datasets, "
                             f"not {name!r}")
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
    """Raises ValueError unless the two folders have the same class sub-folders (the ones
    holding images), naming the differences."""
    def classes(root):
        root = pathlib.Path(root).expanduser()
        return {p.name for p in root.iterdir()
                if p.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in p.rglob("*"))}

    train, test = classes(folder), classes(eval_folder)
    if train != test:
        raise ValueError(
            f"--eval_dataset={eval_folder} and --dataset={folder} must have the same class "
            f"sub-folders: only in the test folder {sorted(test - train) or 'none'}, only in the "
            f"training folder {sorted(train - test) or 'none'}")


def class_names(name, data_dir=None, eval_folder=None):
    """Class names in label order of what `load_arrays(name, data_dir, eval_folder=...)`
    loads (a folder's: its sub-folders, sorted), for pictures and reports."""
    if os.path.isdir(os.path.expanduser(str(name))):
        root = pathlib.Path(eval_folder or name).expanduser()
        return sorted(p.name for p in root.iterdir() if p.is_dir())
    if name == "sample":
        return list(SAMPLE_CLASSES)
    if is_npz(name):
        return [str(label) for label in range(class_count(load_npz(name)))]
    _, info = _tfds_load(_tfds(), name, "test", data_dir)
    return list(info.features["label"].names)
