"""What every run writes next to its outputs: library versions and atomic JSON files."""

import hashlib
import json
import os
import pathlib
import platform
import subprocess
import sys


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def host():
    """The CPU a result was measured on: model name, logical cores and the ISA flags that
    decide TensorFlow's kernels (/proc/cpuinfo; empty fields where it is absent)."""
    model, flags = "", set()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return dict(cpu=model or platform.processor(), cores=os.cpu_count(),
                isa=[f for f in ISA_FLAGS if f in flags])


def versions():
    """Python, platform, library versions, the host's CPU and the git commit of the
    checkout, if any."""
    import keras
    import numpy
    import tensorflow as tf

    import byol_tf

    out = dict(python=sys.version.split()[0], platform=platform.platform(),
               tensorflow=tf.__version__, keras=keras.__version__, numpy=numpy.__version__,
               byol_tf=byol_tf.__version__, keras_backend=keras.backend.backend(), host=host())
    try:
        import tensorflow_datasets as tfds
        out["tensorflow_datasets"] = tfds.__version__
    except ImportError:
        pass
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=pathlib.Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def write_json(path, payload):
    """Write atomically: a crash never leaves a half-written file in place."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    os.replace(tmp, path)


def sha256_file(path):
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
