"""Files written whole or not at all, and their hashes: the one atomic writer every part of
byol_tf uses (checkpoints, run records, saved models, exports, zoo entries, caches)."""

import contextlib
import hashlib
import json
import os
import pathlib
import shutil


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def partial_name(path):
    """The hidden temporary name beside `path` that `atomic_path` writes to: it keeps the
    suffixes (`.keras`, `.weights.h5`), which Keras requires, and names the writer."""
    path = pathlib.Path(path)
    stem, dot, suffixes = path.name.partition(".")
    return path.with_name(f".{stem}.partial-{os.getpid()}{dot}{suffixes}")


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (a file or a folder may be written there); when
    the block ends without error it is renamed to `path`, replacing a file already there;
    otherwise it is removed. A crash at any moment leaves `path` as it was."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    _remove(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return pathlib.Path(path)


def write_json(path, payload):
    """Writes `payload` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(payload, indent=2, default=float) + "\n")


def sha256_file(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
