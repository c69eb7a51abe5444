"""TensorFlow's CPU kernels, chosen by measurement: oneDNN on every x86-64 CPU.

TensorFlow 2.21 turns its oneDNN kernels on by itself only on x86 CPUs with AVX512-VNNI,
AVX512-BF16 or AMX; on others (AVX2-only hosts, AVX-512 CPUs without VNNI) it runs Eigen's.
On AVX2-only CPUs the BYOL step runs markedly faster with oneDNN than with Eigen (the
benchmarks' results record by how much). `import byol_tf` therefore sets
`TF_ENABLE_ONEDNN_OPTS=1` on x86-64 unless the variable is set already (set it to 0 to keep
Eigen's kernels) — which only works while TensorFlow is not imported yet: import byol_tf
first, or set the variable in the shell. Nothing here imports TensorFlow.
"""

import os
import platform
import sys
import warnings

from byol_tf import compat

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def choose_cpu_kernels():
    """Sets TF_ENABLE_ONEDNN_OPTS=1 on x86-64 when unset and TensorFlow is not yet imported.
    Returns the value TensorFlow will read (None: its own default)."""
    if ONEDNN not in os.environ and "tensorflow" not in sys.modules and X86_64:
        os.environ[ONEDNN] = "1"
    return os.environ.get(ONEDNN)


def warn_if_eigen_kernels():
    """Warns when TensorFlow was imported before byol_tf, without the variable, on an x86-64
    CPU where it then runs Eigen's slower kernels."""
    if (ONEDNN not in os.environ and sys.modules.get("tensorflow") is not None and X86_64
            and not compat.onednn_enabled()):
        warnings.warn(
            "TensorFlow was imported before byol_tf and runs its Eigen CPU kernels: on CPUs "
            "without AVX512-VNNI/BF16 its oneDNN kernels trained BYOL 1.7-1.9× faster. Set "
            "TF_ENABLE_ONEDNN_OPTS=1 in the environment, or import byol_tf before TensorFlow.",
            stacklevel=3)
