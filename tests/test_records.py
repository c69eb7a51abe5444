"""Run records (versions, host) and files (atomic writes, sha256)."""

import hashlib
import json
import os

import pytest

from byol_tf import files, records


def test_versions_name_the_stack_and_the_host():
    found = records.versions()
    assert {"python", "platform", "tensorflow", "keras", "numpy", "byol_tf", "keras_backend",
            "host"} <= set(found)
    assert found["host"]["cores"] == os.cpu_count() and found["host"]["cpu"]
    cpuinfo = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), [])
    assert found["host"]["isa"] == [f for f in records.ISA_FLAGS if f in flags]
    import keras
    import tensorflow as tf

    assert found["tensorflow"] == tf.__version__ and found["keras"] == keras.__version__
    json.dumps(found)  # a record must be JSON


def test_write_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    files.write_json(path, {"top1": 0.5, "history": [1, 2]})
    assert json.loads(path.read_text()) == {"top1": 0.5, "history": [1, 2]}
    # A write that fails before the rename leaves the previous file untouched.
    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        files.write_json(path, {"top1": 0.9})
    assert json.loads(path.read_text()) == {"top1": 0.5, "history": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no partial left


def test_atomic_path_writes_folders_whole_and_keeps_keras_suffixes(tmp_path):
    target = tmp_path / "export" / "1"
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            (tmp / "variables").mkdir(parents=True)
            raise RuntimeError("killed half-way")
    assert not target.exists() and list((tmp_path / "export").iterdir()) == []
    with files.atomic_path(target) as tmp:
        (tmp / "variables").mkdir(parents=True)
    assert (target / "variables").is_dir()
    tmp = files.partial_name(tmp_path / "ckpt-7.weights.h5")
    assert tmp.name.startswith(".ckpt-7.partial-") and tmp.name.endswith(".weights.h5")


def test_numpy_floats_are_written(tmp_path):
    import numpy as np

    files.write_json(tmp_path / "m.json", {"x": np.float32(0.25)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 0.25}


def test_sha256_file_matches_hashlib_across_blocks(tmp_path):
    blob = os.urandom(3 * (1 << 20) + 17)  # spans several 1 MiB blocks
    (tmp_path / "f").write_bytes(blob)
    assert files.sha256_file(tmp_path / "f") == hashlib.sha256(blob).hexdigest()
