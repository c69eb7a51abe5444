"""`Source`: a dataset byol_tf trains or evaluates on, its kind decided once.

    source = Source.of("cifar10", data_dir="~/tfds")       # a TFDS dataset
    source = Source.of("/data/train", eval_folder="/data/val")   # a folder of images
    source = Source.of("sample")                            # the bundled sample (arrays)

Kinds: "arrays" (the bundled sample, or an .npz file of arrays: `load_npz`), "tfds" (a TFDS
dataset, never downloaded), "folder" (a folder of images; one sub-folder per class for
labels). A source knows its size, classes and image side (None for images of varying size)
and makes the pretraining stream and the evaluation arrays.
"""

import dataclasses
import os
import pathlib

from byol_tf.data.folders import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, DataError
from byol_tf.data.sample import is_npz
from byol_tf.data.tfds import TFDS_DATASETS

PLURALS = {"arrays": "array datasets", "tfds": "TFDS datasets", "folder": "folders of images"}


@dataclasses.dataclass(frozen=True)
class Source:
    """A dataset. Build one with `Source.of`.

    Attributes:
      kind: "arrays", "tfds" or "folder".
      name: "sample", an .npz path, a TFDS name or a folder, as given.
      data_dir: TFDS only: where the prepared dataset is (None: TFDS's default).
      split: TFDS only: the pretraining split (None: the dataset's training split).
      eval_folder: folders only: the labelled test folder (the same class sub-folders).
      skip_bad_images: folders only: leave out unreadable files (with a warning) instead of
        raising a `DataError` that names them.
      max_image_pixels: folders only: files of more pixels are unreadable, before decoding.
    """

    kind: str
    name: str
    data_dir: str | None = None
    split: str | None = None
    eval_folder: str | None = None
    skip_bad_images: bool = False
    max_image_pixels: int = MAX_IMAGE_PIXELS

    @classmethod
    def of(cls, name, data_dir=None, split=None, eval_folder=None, skip_bad_images=False,
           max_image_pixels=MAX_IMAGE_PIXELS):
        """The source `name` names; a `DataError` when it names none, or when an argument
        cannot act on its kind (e.g. `split` of a folder)."""
        if isinstance(name, Source):
            return name
        name = str(name)
        if name == "sample" or is_npz(name):
            kind = "arrays"
        elif name in TFDS_DATASETS:
            kind = "tfds"
        elif os.path.isdir(os.path.expanduser(name)):
            kind = "folder"
        else:
            raise DataError(f"unknown dataset {name!r}: use 'sample', one of "
                            f"{sorted(TFDS_DATASETS)}, an .npz file of arrays or an existing "
                            "folder of images")
        given = dict(data_dir=data_dir is not None, split=split is not None,
                     eval_folder=eval_folder is not None, skip_bad_images=bool(skip_bad_images),
                     max_image_pixels=max_image_pixels != MAX_IMAGE_PIXELS)
        acts_on = {"data_dir": "tfds", "split": "tfds", "eval_folder": "folder",
                   "skip_bad_images": "folder", "max_image_pixels": "folder"}
        for argument, kind_it_acts_on in acts_on.items():
            if given[argument] and kind != kind_it_acts_on:
                raise DataError(f"{argument} applies to {PLURALS[kind_it_acts_on]} only, "
                                f"and {name!r} is {DESCRIPTIONS[kind]}", [argument])
        if max_image_pixels < 1:
            raise DataError(f"max_image_pixels must be ≥ 1; got {max_image_pixels}",
                            ["max_image_pixels"])
        if eval_folder is not None and not os.path.isdir(os.path.expanduser(eval_folder)):
            raise DataError(f"eval_folder: no such folder {eval_folder}", ["eval_folder"])
        return cls(kind, name, data_dir, split, eval_folder, bool(skip_bad_images),
                   int(max_image_pixels))

    @property
    def path(self):
        """A folder's or an .npz file's path, user's `~` expanded."""
        return pathlib.Path(self.name).expanduser()

    @property
    def image_side(self):
        """The side of every image (None: they vary, cropped per image in tf.data)."""
        if self.kind == "tfds":
            return TFDS_DATASETS[self.name][1]
        if self.kind == "arrays":
            return int(self.arrays()["x_train"].shape[1])
        return None

    def arrays(self):
        """The arrays of an "arrays" source (`load_npz`'s dict)."""
        from byol_tf.data.sample import load_npz, load_sample

        if self.kind != "arrays":
            raise DataError(f"{self.name!r} is {DESCRIPTIONS[self.kind]}, not arrays")
        return load_sample() if self.name == "sample" else load_npz(self.name)

    def examples(self):
        """(number of pretraining examples, number of classes or None) of the source, before
        any image is decoded: a folder's readable images (checked by their first bytes, as
        its stream reads them), a TFDS split's recorded size, an array's length."""
        if self.kind == "arrays":
            from byol_tf.data.sample import class_count

            arrays = self.arrays()
            return len(arrays["x_train"]), class_count(arrays)
        if self.kind == "folder":
            from byol_tf.data.folders import list_folder

            files, classes = list_folder(self.path, self.skip_bad_images, self.max_image_pixels)
            return len(files), len(classes) if classes else None
        from byol_tf.data.tfds import _tfds, _tfds_load

        default_split, _, labelled = TFDS_DATASETS[self.name]
        split = self.split or default_split
        _, info = _tfds_load(_tfds(), self.name, split, self.data_dir)
        return (info.splits[split].num_examples,
                info.features["label"].num_classes if labelled else None)

    def check_eval_folder(self):
        """Folders: a `DataError` unless `eval_folder` is given, is another folder than the
        training one, and has the same class sub-folders (the ones holding images; two or
        more), naming the differences."""
        if self.kind != "folder":
            return
        if not self.eval_folder:
            raise DataError(f"evaluating on the folder {self.name} needs a labelled test folder "
                            "(eval_folder, with the same class sub-folders)", ["eval_folder"])

        def classes(root):
            root = pathlib.Path(root).expanduser()
            return {p.name for p in root.iterdir() if p.is_dir() and any(
                f.suffix.lower() in IMAGE_EXTENSIONS for f in p.rglob("*"))}

        if pathlib.Path(self.eval_folder).expanduser().resolve() == self.path.resolve():
            raise DataError(f"eval_folder={self.eval_folder} is the folder {self.name} itself: a "
                            "score on the images the encoder trained on says nothing about new "
                            "images; give a held-out folder", ["eval_folder"])
        train, test = classes(self.name), classes(self.eval_folder)
        if len(train) < 2:
            raise DataError(f"the folder {self.name} has {len(train)} class sub-folder(s) "
                            f"({', '.join(sorted(train)) or 'none'}): an evaluation needs two or "
                            "more (with one, every prediction is right)", ["eval_folder"])
        if train != test:
            raise DataError(
                f"eval_folder={self.eval_folder} and the folder {self.name} must have the same "
                f"class sub-folders: only in the test folder {sorted(test - train) or 'none'}, "
                f"only in the training folder {sorted(train - test) or 'none'}", ["eval_folder"])


DESCRIPTIONS = {"arrays": "an array dataset", "tfds": "a TFDS dataset",
                "folder": "a folder of images"}
