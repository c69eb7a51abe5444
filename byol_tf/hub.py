"""Where zoo entries come from: names, handles, one download cache, and verification.

A preset is a name or a handle:
  - a name in the registry (`zoo_registry.json`, in the package): the entries byol_tf
    publishes, each with its handle and the sha256 of every file;
  - a local folder holding an entry (`model_card.json` beside the files it lists);
  - the URL of such a folder: `https://…`, `http://…`, `file://…`, or `gs://…` (through
    `tf.io.gfile`).
A remote entry's files are fetched into one cache, `$BYOL_TF_CACHE/zoo` (default
`~/.cache/byol_tf/zoo`): each file is downloaded under a temporary name, checked against its
sha256 and only then renamed into place. A cached file is used again while it matches, so a
second load makes no request, an interrupted download is redone, and a damaged file is
refused, naming it and both hashes. Every path a card names must stay inside its entry.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import urllib.parse

from byol_tf.files import partial_name, sha256_file

CARD = "model_card.json"
REGISTRY = pathlib.Path(__file__).parent / "zoo_registry.json"
PACKAGE = "package:"  # a registry handle inside the installed package (its models/)
CACHE_ENV = "BYOL_TF_CACHE"
REMOTE = re.compile(r"^(https?|file|gs)://", re.IGNORECASE)


class Entry:
    """A resolved zoo entry: its card and the local folder where its files are verified.

    name: the entry's name; handle: where it came from; folder: a local folder holding every
    file the card lists (checked); card: the model card (dict)."""

    def __init__(self, name, handle, folder, card):
        self.name, self.handle, self.folder, self.card = name, handle, folder, card

    def path(self, relative):
        return self.folder / relative


def registry():
    """{name: registry record} of the entries byol_tf publishes."""
    return json.loads(REGISTRY.read_text())


def cache_root():
    root = os.environ.get(CACHE_ENV, "~/.cache/byol_tf")
    if root.lower() in ("", "0", "off", "none"):
        root = "~/.cache/byol_tf"  # (the zoo needs a cache even when decoded datasets do not)
    return pathlib.Path(root).expanduser() / "zoo"


def resolve(preset):
    """A name or handle → its verified `Entry`. Raises ValueError naming what is wrong."""
    records = registry()
    if preset in records:
        record = records[preset]
        handle = record["handle"]
        if handle.startswith(PACKAGE):
            handle = str(pathlib.Path(__file__).parent / handle[len(PACKAGE):])
        return _resolve_handle(handle, expected=record["files"], name=preset)
    if REMOTE.match(str(preset)) or pathlib.Path(str(preset)).expanduser().is_dir():
        return _resolve_handle(str(preset))
    raise ValueError(f"no zoo entry {preset!r}: not a name ({', '.join(records) or 'none'}), "
                     "a folder, or an https://, http://, file:// or gs:// handle")


def read_card(path, label):
    """A model card file → dict; ValueError naming the file when it is not one."""
    try:
        card = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"zoo entry {label!r}: {path} is not valid JSON ({error})") from None
    if not isinstance(card, dict) or not isinstance(card.get("files", {}), dict):
        raise ValueError(f"zoo entry {label!r}: {path} is not a model card (a JSON object with "
                         "a 'files' object)")
    return card


def checked_relative(relative, label):
    """A card's file name, refused unless it is a plain relative path inside the entry."""
    path = pathlib.PurePosixPath(str(relative))
    if (not str(relative) or "\\" in str(relative) or path.is_absolute() or ".." in path.parts
            or re.match(r"^[A-Za-z]:", str(relative))):
        raise ValueError(f"zoo entry {label!r}: the card names the file {relative!r}, a path "
                         "that leaves the entry; refusing to load")
    return str(path)


def verify(folder, files, label):
    """Checks every file `files` lists ({relative path: {"sha256": …}}) inside `folder`:
    present, a regular file inside the folder (no link out), its sha256 as listed."""
    folder = pathlib.Path(folder)
    root = folder.resolve()
    for relative, spec in files.items():
        path = folder / checked_relative(relative, label)
        if not path.is_file():
            raise ValueError(f"zoo entry {label!r}: file {relative} is missing")
        if path.is_symlink() or root not in path.resolve().parents:
            raise ValueError(f"zoo entry {label!r}: {relative} is a link out of the entry; "
                             "refusing to load")
        actual = sha256_file(path)
        if actual != spec.get("sha256"):
            raise ValueError(f"zoo entry {label!r}: {path} has sha256 {actual}, the card says "
                             f"{spec.get('sha256')} (corrupt or tampered); refusing to load")


def _resolve_handle(handle, expected=None, name=None):
    """`expected`: the registry's {file: spec} (what is trusted); else the handle's card."""
    label = name or handle
    remote = bool(REMOTE.match(handle))
    folder = _cache_folder(handle) if remote else pathlib.Path(handle).expanduser()
    card_path = folder / CARD
    if remote and not card_path.is_file():
        fetch(_join(handle, CARD), card_path, None, handle)
    card = read_card(card_path, label)
    files = expected if expected is not None else card.get("files")
    if files is None:
        raise ValueError(f"zoo entry {label!r}: {card_path} lists no files")
    if expected is not None and CARD in expected:  # the registry vouches for the card too
        verify(folder, {CARD: expected[CARD]}, label)
    kind = card.get("source", {}).get("kind")
    if kind is None and "encoder.keras" not in files:
        raise ValueError(f"zoo entry {label!r}: the card does not list encoder.keras")
    if remote:
        for relative, spec in files.items():
            if relative != CARD:
                path = folder / checked_relative(relative, label)
                if not (path.is_file() and sha256_file(path) == spec.get("sha256")):
                    fetch(_join(handle, relative), path, spec.get("sha256"), handle)
    verify(folder, {k: v for k, v in files.items() if k != CARD}, label)
    return Entry(name or card.get("name") or pathlib.PurePosixPath(handle).name, handle, folder,
                 card)


def _cache_folder(handle):
    tail = re.sub(r"[^A-Za-z0-9_.-]", "_", urllib.parse.urlsplit(handle).path.rstrip("/")
                  .rsplit("/", 1)[-1])[:60] or "entry"
    return cache_root() / f"{tail}-{hashlib.sha256(handle.encode()).hexdigest()[:12]}"


def _join(handle, relative):
    return handle.rstrip("/") + "/" + urllib.parse.quote(relative)


def fetch(url, dest, sha256, handle):
    """Downloads `url` to `dest` through a temporary name; with `sha256`, the file is checked
    before it is renamed into place. Errors name the handle; nothing unchecked stays."""
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = partial_name(dest)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        downloaded = staging / "file"
        try:
            if url.lower().startswith("gs://"):
                import tensorflow as tf

                tf.io.gfile.copy(url, str(downloaded), overwrite=True)
            else:
                import keras

                keras.utils.get_file(fname="file", origin=url, cache_dir=str(staging),
                                     cache_subdir="")
        except Exception as error:  # noqa: BLE001 (urllib, TF and Keras raise many kinds)
            raise OSError(f"could not fetch {url} for the zoo handle {handle}: "
                          f"{str(error).strip() or type(error).__name__}") from None
        if sha256 is not None:
            actual = sha256_file(downloaded)
            if actual != sha256:
                raise ValueError(f"zoo handle {handle}: {url} has sha256 {actual}, expected "
                                 f"{sha256} (corrupt or tampered); refusing to use it")
        os.replace(downloaded, dest)  # (the staging folder is beside dest: an atomic rename)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
