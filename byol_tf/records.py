"""What every run records next to its outputs: the host's CPU and the library versions."""

import os
import pathlib
import platform
import subprocess
import sys


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


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
    """Python, platform, library versions (TensorFlow, TFDS and JAX where this process
    imported them), the host's CPU and the git commit of the checkout, if any."""
    import keras
    import numpy

    import byol_tf

    out = dict(python=sys.version.split()[0], platform=platform.platform(),
               keras=keras.__version__, numpy=numpy.__version__, byol_tf=byol_tf.__version__,
               keras_backend=keras.backend.backend(), host=host())
    for name in ("tensorflow", "tensorflow_datasets", "jax"):  # those this process uses
        if sys.modules.get(name) is not None:
            out[name] = sys.modules[name].__version__
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=pathlib.Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return out

