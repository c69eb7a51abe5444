"""The model zoo: published encoders, each a folder `models/<name>/`.

An entry holds `model_card.json` (architecture, data, recipe, evaluation results with the
commands that measured them, date, versions, and the sha256 of every file), a short
`README.md`, `encoder.keras` (a `byol_tf.ImageEncoder`: uint8 images of any size →
embedding) and the same model as a SavedModel (`saved_model/`, TF Serving signatures, see
byol_tf.export). A file too large for the repository is listed with a `url` instead
and fetched with `keras.utils.get_file` on first use; every file, local or fetched, must
match its sha256 or it is refused.

    byol_tf.zoo.list()                        → names
    byol_tf.zoo.info(name)                    → the model card
    byol_tf.zoo.load(name, trainable=False)   → ImageEncoder: uint8 images → embedding

Entries are written by `byol_tf.training.publish` (`train.py --publish=NAME`).

Imported entries (`"source": {"kind": "deepmind_checkpoint", "url": …}`) hold no weights:
`load` fetches the official checkpoint, checks it against the card's sha256 when the card
has one (else logs the fetched file's sha256 to compare with the publisher's), converts it
with `byol_tf.convert` (a restricted unpickler: a tampered file cannot run code) and caches
the converted encoder beside the download (under $BYOL_ZOO_CACHE, default ~/.keras).
"""

import json
import os
import pathlib
import shutil

from byol_tf.files import atomic_path, sha256_file

ZOO_DIR = pathlib.Path(os.environ.get("BYOL_ZOO_DIR", pathlib.Path(__file__).parents[1] / "models"))
CARD = "model_card.json"


def list(root=None):  # noqa: A001  (the zoo's verb)
    """Names of the entries under `root` (default `models/`) whose card reads; a broken
    card is logged and its entry left out."""
    from absl import logging

    root = pathlib.Path(root or ZOO_DIR)
    if not root.exists():
        return []
    names = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not (p / CARD).exists():
            continue
        try:
            info(p.name, root)
        except ValueError as error:
            logging.warning("%s; not listed", error)
            continue
        names.append(p.name)
    return names


def info(name, root=None):
    """The model card of entry `name`."""
    path = pathlib.Path(root or ZOO_DIR) / name / CARD
    if not path.exists():
        raise ValueError(f"No zoo entry {name!r} in {path.parent.parent}; entries: "
                         f"{', '.join(list(root)) or 'none'}")
    try:
        card = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"zoo entry {name!r}: {path} is not valid JSON ({error})") from None
    if not isinstance(card, dict) or not isinstance(card.get("files", {}), dict):
        raise ValueError(f"zoo entry {name!r}: {path} is not a model card (a JSON object with "
                         "a 'files' object)")
    return card


def verified_files(name, root=None):
    """Checks (and fetches, for `url` entries) every file of the card; returns the entry
    folder. Raises ValueError naming the first file that is missing or does not match."""
    entry = pathlib.Path(root or ZOO_DIR) / name
    card = info(name, root)
    for relative, spec in card["files"].items():
        path = entry / relative
        if not path.exists() and spec.get("url"):
            import keras

            fetched = keras.utils.get_file(
                fname=relative.replace("/", "__"), origin=spec["url"], file_hash=spec["sha256"],
                hash_algorithm="sha256", cache_subdir=f"byol_tf_zoo/{name}")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fetched, path)
        if not path.exists():
            raise ValueError(f"zoo entry {name!r}: file {relative} is missing")
        actual = sha256_file(path)
        if actual != spec["sha256"]:
            raise ValueError(f"zoo entry {name!r}: {relative} has sha256 {actual[:12]}…, the card "
                             f"says {spec['sha256'][:12]}… (corrupt or tampered); refusing to load")
    return entry


def load(name, trainable=False, root=None):
    """The entry's `ImageEncoder`: uint8 (or [0, 1] float) images `[B, H, W, 3]` of any
    size → embedding `[B, D]`, through the entry's own `ImageConverter` (crop, resize,
    normalisation). `trainable` sets whether fine-tuning moves the encoder's weights; the
    input contract is the same either way, and the same as the entry's SavedModel.
    Imported entries: the official checkpoint, converted (see the module docstring).
    """
    from byol_tf.image_encoder import as_image_encoder

    card = info(name, root)
    if card.get("source", {}).get("kind") == "deepmind_checkpoint":
        model = _converted_encoder(card)
    else:
        import keras

        import byol_tf  # noqa: F401  (registers byol_tf's layers for loading)

        entry = verified_files(name, root)
        model = as_image_encoder(keras.models.load_model(entry / "encoder.keras"),
                                 card.get("image_size"))
    model.encoder.trainable = trainable
    return model


def _converted_encoder(card):
    """Fetches (or finds cached) the official checkpoint an imported entry points at,
    verifies it, converts it once and returns its `ImageEncoder`."""
    import urllib.parse

    import keras
    from absl import logging

    from byol_tf import convert

    source = card["source"]
    expected = source.get("sha256")
    filename = pathlib.PurePosixPath(urllib.parse.urlparse(source["url"]).path).name
    cache_dir = os.environ.get("BYOL_ZOO_CACHE")
    if cache_dir:  # get_file falls back to /tmp/.keras for a folder that does not exist yet
        pathlib.Path(cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
    path = pathlib.Path(keras.utils.get_file(
        fname=filename, origin=source["url"], file_hash=expected, hash_algorithm="sha256",
        cache_dir=cache_dir, cache_subdir=f"byol_tf_zoo/{card['name']}"))
    actual = sha256_file(path)
    if expected and actual != expected:
        raise ValueError(f"zoo entry {card['name']!r}: {filename} has sha256 {actual[:12]}…, the "
                         f"card says {expected[:12]}… (corrupt or tampered); refusing to load")
    if not expected:
        logging.warning("zoo entry %r: the card gives no sha256 for %s; the fetched file's is "
                        "%s (compare it with the publisher's)", card["name"], filename, actual)
    cached = path.with_name(f"image-encoder-{actual[:16]}.keras")
    if cached.exists():
        return keras.models.load_model(cached)
    model = convert.from_deepmind(path, image_size=card["image_size"]).image_encoder()
    with atomic_path(cached) as tmp:
        model.save(tmp)
    return model
