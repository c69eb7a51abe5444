"""The model zoo: pretrained encoders by name or handle, from anywhere byol_tf is installed.

    byol_tf.zoo.list()                                  → the published entries' names
    byol_tf.zoo.info(name_or_handle)                    → its model card
    byol_tf.zoo.load(name_or_handle, trainable=False)   → ImageEncoder: uint8 images → embedding
    byol_tf.ImageEncoder.from_preset(name_or_handle)    → the same

An entry is a folder: `model_card.json` (architecture, data, recipe, results with the
commands that measured them, the sha256 of every file), `README.md`, `encoder.keras` (a
`byol_tf.ImageEncoder`), the same model as a SavedModel (`saved_model/`, see
`byol_tf.export`) and pictures. The entries byol_tf trains ship inside the package; the
registry (`zoo_registry.json`) holds every published entry's handle and file hashes; names,
handles (a folder, `https://`, `file://`, `gs://`) and the download cache are
`byol_tf.hub`'s. Imported entries (`"source": {"kind": "deepmind_checkpoint", "url": …}`) hold
no weights: loading fetches the official checkpoint and converts it once (`byol_tf.convert`,
a restricted unpickler). Entries are written by `byol_tf.training.publish`
(`byol-train --publish=NAME`).
"""

import pathlib

from byol_tf import hub
from byol_tf.hub import CARD
from byol_tf.image_encoder import ImageEncoder

__all__ = ["CARD", "info", "list", "load", "verified_files"]


def list(root=None):  # noqa: A001  (the zoo's verb)
    """Names of the published entries; with `root`, of the entry folders under `root` whose
    card reads (a broken card is logged and its entry left out)."""
    if root is None:
        return sorted(hub.registry())
    from absl import logging

    root = pathlib.Path(root)
    names = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or not (path / CARD).is_file():
            continue
        try:
            info(path.name, root)
        except (ValueError, OSError) as error:
            logging.warning("%s; not listed", error)
            continue
        names.append(path.name)
    return names


def info(name, root=None):
    """The model card of entry `name` (under `root` when given), or of a handle."""
    if root is not None:
        path = _entry_folder(name, root) / CARD
        if not path.is_file():
            raise ValueError(f"No zoo entry {name!r} in {root}; entries: "
                             f"{', '.join(list(root)) or 'none'}")
        return hub.read_card(path, name)
    return hub.resolve(name).card


def verified_files(name, root):
    """Checks every file the card of `root/name` lists; returns the entry folder."""
    entry = pathlib.Path(root) / name
    hub.verify(entry, info(name, root)["files"], name)
    return entry


def load(name, trainable=False, root=None):
    """The entry's `ImageEncoder`: uint8 (or [0, 1] float) images `[B, H, W, 3]` of any
    size → embedding `[B, D]`, through the entry's own `ImageConverter`. `trainable` sets
    whether fine-tuning moves the encoder's weights; the input contract is the same either
    way, and the same as the entry's SavedModel."""
    return ImageEncoder.from_preset(_entry_folder(name, root) if root is not None else name,
                                    trainable=trainable)


def _entry_folder(name, root):
    """`root/name`, a plain entry name (`hub.check_entry_name`), put back first if a publish
    killed between its renames left it aside (`hub.restore_replaced`)."""
    folder = pathlib.Path(root) / hub.check_entry_name(name)
    hub.restore_replaced(folder)
    return folder
