"""Files written whole or not at all, and their hashes: the one atomic writer every part of
byol_tf uses (checkpoints, run records, saved models, exports, zoo entries, caches)."""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import socket
import sys
import time


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
    except OSError as error:
        if error.errno == errno.ENOSPC:  # (name what was being written)
            raise OSError(errno.ENOSPC, f"No space left on device writing {path}",
                          str(path)) from error
        raise
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def require_space(folder, needed, what):
    """Raises OSError(ENOSPC) naming `folder`, `what` and the sizes when the file system
    of `folder` has less than `needed` bytes free (checked before writing, since some
    writers, HDF5's among them, do not fail cleanly on a full disk)."""
    folder = pathlib.Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device for {what} in {folder}: about "
                      f"{needed / 2**20:.1f} MiB needed, {free / 2**20:.1f} MiB free",
                      str(folder))


class LockedError(RuntimeError):
    """Another process holds the lock; the message names it."""


_HELD = {}  # lock path → open descriptor (kept open: the lock lives as long as the process)


def hold_lock(path, what):
    """Takes the exclusive lock `path` (a file, created) for the rest of this process (or
    until `release_lock`), or raises LockedError naming `what` and the process holding it.
    The kernel releases the lock when the process ends, however it ends, so a killed writer
    never blocks the next. Taking a lock this process already holds does nothing (returns
    False; True when taken); a lock file that is a symbolic link is refused (LockedError),
    never written through. A lock file removed by its holder while this process waited
    (`release_lock(remove=True)`) is not taken: the file now at `path` is."""
    path = pathlib.Path(path)
    if str(path) in _HELD:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:  # (never through a link: a folder that arrives with one would overwrite its target)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            raise LockedError(f"{what}: its lock file {path} is a symbolic link; refusing to "
                              "write through it (remove the link)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"{what} is in use by another process ({holder}); wait for it "
                              f"to end or use another folder") from None
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed it between our open and our lock: try the new one
    os.ftruncate(fd, 0)
    os.write(fd, (f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}: "
                  f"{' '.join(sys.argv)[:300]}").encode())
    _HELD[str(path)] = fd
    return True


def _same_file(fd, path):
    """Whether the open file `fd` is the one at `path` now (not removed or replaced)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def release_lock(path, remove=False):
    """Releases a lock `hold_lock` took (it is released at exit anyway); with `remove`, its
    file is removed first, while still held (a process that opened it meanwhile sees it gone
    and takes a new one: `hold_lock`)."""
    fd = _HELD.pop(str(pathlib.Path(path)), None)
    if fd is not None:
        if remove and _same_file(fd, path):
            os.unlink(path)
        os.close(fd)


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


def open_zip(path):
    """A `zipfile.ZipFile` of `path` whose members are stored or deflated, as numpy and Keras
    write them: ValueError otherwise. (Python inflates a bzip2 or LZMA member a whole input
    chunk at a time, however large it grows: a few bytes can ask for gigabytes.)"""
    import zipfile

    archive = zipfile.ZipFile(path)
    odd = [i.filename for i in archive.infolist()
           if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)]
    if odd:
        archive.close()
        raise ValueError(f"{path}: member {odd[0]} is compressed with a method other than "
                         "deflate (not written by numpy or Keras); refusing to inflate it")
    return archive


def content_sha256(record, own_key):
    """Hex sha256 of the canonical JSON of `record` (a dict) without `own_key`: for records
    that carry the hash of their own content there (checkpoint manifests, phase records)."""
    body = {k: v for k, v in record.items() if k != own_key}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=float).encode()).hexdigest()
