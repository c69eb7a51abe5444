"""Where zoo entries come from: names, handles, one download cache, and verification.

A preset is a name or a handle:
  - a name in the registry (`zoo_registry.json`, in the package): the entries byol_tf
    publishes, each with its handle and the sha256 of every file;
  - a local folder holding an entry (`model_card.json` beside the files it lists);
  - the URL of such a folder: `https://…`, `http://…`, `file://…`, or `gs://…` (through
    `tf.io.gfile`).
A remote entry's files are fetched into one cache, `$BYOL_TF_CACHE/zoo` (default
`~/.cache/byol_tf/zoo`): each file is downloaded under a temporary name, checked against its
sha256 and only then renamed into place. A cached file is used again while it matches the
card, so a second load fetches only the card (to see whether the entry changed; when the
server cannot be reached, the cached card is used with a warning), an interrupted download is
redone, and a damaged file is refused, naming it and both hashes. Every path a card names
must stay inside its entry and reach no link; a card is at most 1 MiB.
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


ENTRY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
SOURCE_KINDS = ("deepmind_checkpoint",)  # entries whose weights come from elsewhere
MAX_CARD_BYTES = 2**20  # a card is a few KB


def imported(card):
    """Whether a card's entry holds no weights of its own (its source is DeepMind's checkpoint,
    fetched and converted on load)."""
    return card.get("source", {}).get("kind") == "deepmind_checkpoint"


def check_entry_name(name, label=None):
    """Raises ValueError (its message starting with `label`, default "zoo entry name 'NAME'")
    unless `name` is a plain entry name (letters, digits, '_', '.', '-'; not starting with '.'
    or '-'; at most 100 characters): a folder inside its zoo."""
    if not ENTRY_NAME.fullmatch(str(name or "")):
        raise ValueError(f"{label or f'zoo entry name {name!r}'}: an entry name is letters, "
                         "digits, '_', '.' and '-' (not starting with '.' or '-'), so that it "
                         "names a folder inside the zoo")
    return name


def read_card(path, label):
    """A model card file → dict; ValueError naming the file when it is not one (not JSON, too
    large, nested too deeply, not an object with a 'files' object)."""
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CARD_BYTES:
            raise ValueError(f"{size:,} bytes, over the limit of {MAX_CARD_BYTES:,} for a card")
        card = json.loads(path.read_text())
    except RecursionError:
        raise ValueError(f"zoo entry {label!r}: {path} is nested too deeply") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"zoo entry {label!r}: {path} is not valid JSON ({error})") from None
    if not isinstance(card, dict) or not isinstance(card.get("files", {}), dict):
        raise ValueError(f"zoo entry {label!r}: {path} is not a model card (a JSON object with "
                         "a 'files' object)")
    source = card.get("source", {})
    if not isinstance(source, dict) or source.get("kind", SOURCE_KINDS[0]) not in SOURCE_KINDS:
        raise ValueError(f"zoo entry {label!r}: {path} names an unknown source "
                         f"{source!r:.80}; known kinds: {', '.join(SOURCE_KINDS)}")
    return card


def checked_relative(relative, label):
    """A card's file name, refused unless it is a plain relative path inside the entry."""
    path = pathlib.PurePosixPath(str(relative))
    if (not str(relative) or "\\" in str(relative) or path.is_absolute() or ".." in path.parts
            or re.match(r"^[A-Za-z]:", str(relative))):
        raise ValueError(f"zoo entry {label!r}: the card names the file {relative!r}, a path "
                         "that leaves the entry; refusing to load")
    return str(path)


def inside(folder, relative, label):
    """`folder/relative`, refused (ValueError) unless it is a plain relative path to a regular
    file inside `folder`, reached through no link."""
    parts = pathlib.PurePosixPath(checked_relative(relative, label)).parts
    path = pathlib.Path(folder).joinpath(*parts)
    if not path.is_file():
        raise ValueError(f"zoo entry {label!r}: file {relative} is missing")
    if any(pathlib.Path(folder).joinpath(*parts[:i + 1]).is_symlink() for i in range(len(parts))):
        raise ValueError(f"zoo entry {label!r}: {relative} is a link; refusing to load")
    return path


def verify(folder, files, label):
    """Checks every file `files` lists ({relative path: {"sha256": …}}) inside `folder`:
    present, a regular file inside the folder (no link), its sha256 as listed."""
    for relative, spec in files.items():
        path = inside(folder, relative, label)
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
    if remote:
        _revalidate_card(handle, card_path, label)
    card = read_card(card_path, label)
    files = expected if expected is not None else card.get("files")
    if files is None:
        raise ValueError(f"zoo entry {label!r}: {card_path} lists no files")
    if expected is not None and CARD in expected:  # the registry vouches for the card too
        verify(folder, {CARD: expected[CARD]}, label)
    if not imported(card) and "encoder.keras" not in files:
        raise ValueError(f"zoo entry {label!r}: the card does not list encoder.keras")
    if remote:
        local = _file_url_folder(handle)
        for relative, spec in files.items():
            if relative != CARD:
                if local is not None:  # (a file:// handle: the same rule as a folder's)
                    inside(local, relative, label)
                path = folder / checked_relative(relative, label)
                if not (path.is_file() and sha256_file(path) == spec.get("sha256")):
                    fetch(_join(handle, relative), path, spec.get("sha256"), handle)
    verify(folder, {k: v for k, v in files.items() if k != CARD}, label)
    return Entry(name or card.get("name") or pathlib.PurePosixPath(handle).name, handle, folder,
                 card)


def entry_lock(entry):
    """The lock file of the zoo entry folder `entry` (`files.hold_lock`: one writer each)."""
    entry = pathlib.Path(entry)
    return entry.with_name(f".{entry.name}.lock")


def replaced_name(entry):
    """Where a publish keeps the entry it replaces until the new one is in place."""
    entry = pathlib.Path(entry)
    return entry.with_name(f".{entry.name}.replaced")


def restore_replaced(entry):
    """Puts back the entry a publish killed between its two renames left aside (its
    `replaced_name` there, the entry gone), under the entry's lock. ValueError when a live
    publisher holds the lock (the entry is being replaced) or the zoo cannot be written."""
    from byol_tf.files import LockedError, hold_lock, release_lock

    entry, old = pathlib.Path(entry), replaced_name(entry)
    if entry.exists() or not old.is_dir():
        return
    lock = entry_lock(entry)
    try:
        taken = hold_lock(lock, f"zoo entry {entry}")
    except (LockedError, OSError) as error:
        raise ValueError(f"zoo entry {entry} is being replaced or cannot be restored "
                         f"({error}); try again in a moment") from None
    try:
        if not entry.exists() and old.is_dir():
            os.rename(old, entry)
    finally:
        if taken:
            release_lock(lock)


def _file_url_folder(handle):
    """The local folder of a `file://` handle (None for other handles)."""
    import urllib.request

    parts = urllib.parse.urlsplit(handle)
    if parts.scheme.lower() != "file":
        return None
    return pathlib.Path(urllib.request.url2pathname(parts.path))


def _revalidate_card(handle, card_path, label):
    """Fetches a remote entry's card again on every resolve (the entry may have been replaced
    on the server, or an error page served once); the cached card is kept when the server
    cannot be reached, with a warning, and replaced only by a card that reads."""
    from absl import logging

    local = _file_url_folder(handle)
    if local is not None:
        inside(local, CARD, label)
    fresh = card_path.with_name(f".{CARD}.fetched")
    try:
        fetch(_join(handle, CARD), fresh, None, handle)
        read_card(fresh, label)
        os.replace(fresh, card_path)
    except OSError as error:
        if not card_path.is_file():
            raise
        logging.warning("zoo entry %r: could not check its card at %s (%s); using the cached "
                        "card from %s", label, handle, error, card_path.parent)
    finally:
        fresh.unlink(missing_ok=True)


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
