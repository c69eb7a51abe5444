"""TensorFlow's start-up: its CPU kernels (oneDNN on every x86-64 CPU) and its start-up lines.

TensorFlow 2.21 turns its oneDNN kernels on by itself only on x86 CPUs with AVX512-VNNI,
AVX512-BF16 or AMX; on others (AVX2-only hosts, AVX-512 CPUs without VNNI) it runs Eigen's.
On AVX2-only CPUs the BYOL step runs markedly faster with oneDNN than with Eigen (the
benchmarks' results record by how much). `import byol_tf` therefore sets
`TF_ENABLE_ONEDNN_OPTS=1` on x86-64 unless the variable is set already (set it to 0 to keep
Eigen's kernels) — which only works while TensorFlow is not imported yet: import byol_tf
first, or set the variable in the shell.

TensorFlow's C++ libraries write notices to stderr while they load, before its logging is
configured, so `TF_CPP_MIN_LOG_LEVEL` cannot silence them: the CUDA probe of a machine
without a GPU ("Could not find cuda drivers", "failed call to cuInit"), oneDNN's and the CPU
features'. `import byol_tf` drops exactly those lines while it imports Keras and its backend
(`startup_notices_dropped`, through `grep`) and passes everything else through at once, and sets
`TF_CPP_MIN_LOG_LEVEL=1` when it is unset (C++ INFO lines, such as XLA's on its first compile,
are left out; warnings and errors are kept). `TF_CPP_MIN_LOG_LEVEL=0` keeps everything.
Nothing here imports TensorFlow.
"""

import contextlib
import os
import platform
import shutil
import subprocess
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
            "without AVX512-VNNI/BF16 its oneDNN kernels train BYOL markedly faster. Set "
            "TF_ENABLE_ONEDNN_OPTS=1 in the environment, or import byol_tf before TensorFlow.",
            stacklevel=3)


# Lines TensorFlow (and XLA, CUDA's stubs) print while loading on a machine without a GPU.
# (POSIX extended regular expressions: `grep -E` applies them.)
STARTUP_NOTICES = "|".join([
    r"All log messages before absl::InitializeLog\(\) is called",
    r"port\.cc:[0-9]+\] oneDNN custom operations are on",
    r"cudart_stub\.cc:[0-9]+\] Could not find cuda drivers",
    r"cuda_platform\.cc:[0-9]+\] failed call to cuInit",
    r"cuda_executor\.cc:[0-9]+\] .*(kernel driver|CUDA driver)",
    r"cpu_feature_guard\.cc:[0-9]+\] This TensorFlow binary is optimized",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc:[0-9]+\] computation placer already registered"])


def quiet_cpp_info():
    """Sets TF_CPP_MIN_LOG_LEVEL=1 (no C++ INFO lines) when unset, before TensorFlow loads."""
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ and "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"


def keep_startup_notices():
    """True when the user asked to see everything (`TF_CPP_MIN_LOG_LEVEL=0`)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"


@contextlib.contextmanager
def startup_notices_dropped():
    """Within: stderr (file descriptor 2, where C++ writes) goes through `grep -v -E
    STARTUP_NOTICES`, a separate process that writes every other line to the real stderr as
    it comes — so a message printed just before a crash inside the window is still shown.
    Does nothing when `keep_startup_notices()`, or when stderr cannot be redirected or grep
    cannot be started."""
    grep = shutil.which("grep")
    if keep_startup_notices() or grep is None:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        filtering = subprocess.Popen([grep, "--line-buffered", "-v", "-E", STARTUP_NOTICES],
                                     stdin=subprocess.PIPE, stdout=saved, stderr=saved)
    except OSError:
        os.close(saved)
        yield
        return
    os.dup2(filtering.stdin.fileno(), 2)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # (the pipe's last writer closes next: grep reads to the end, exits)
        os.close(saved)
        filtering.stdin.close()
        try:
            filtering.wait(timeout=10)
        except subprocess.TimeoutExpired:
            filtering.kill()


def accelerator_present():
    """Whether the Keras backend sees a GPU or TPU."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"))
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend() != "cpu"
    return False


def list_devices():
    """Lists the backend's devices (TensorFlow probes CUDA here, once)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.list_physical_devices()
