"""What a process does before it imports TensorFlow: its CPU kernels and its start-up lines.

`import byol_tf` changes nothing in the process that imports it. This module (standard
library only; it imports neither TensorFlow nor byol_tf) holds what a program may choose to
do *before* TensorFlow loads, and the entry points of byol_tf's commands, which do all of it:

    import byol_tf_runtime
    byol_tf_runtime.use_onednn()   # first, before anything imports TensorFlow
    import byol_tf

- `use_onednn()`: TensorFlow 2.21 runs its oneDNN kernels by itself only on x86 CPUs with
  AVX512-VNNI, AVX512-BF16 or AMX; on others (AVX2-only hosts, AVX-512 CPUs without VNNI) it
  runs Eigen's, and the BYOL step is slower (docs/benchmarks.md, "CPU kernels"). Setting
  `TF_ENABLE_ONEDNN_OPTS=1` in the shell does the same.
- `quiet_startup()` and `startup_notices_dropped()`: TensorFlow's C++ libraries write notices
  to stderr while they load, before its logging is configured (the CUDA probe of a machine
  without a GPU, oneDNN's and the CPU features'); the commands drop exactly those lines, and
  C++ INFO lines, unless `TF_CPP_MIN_LOG_LEVEL=0`.
"""

import contextlib
import importlib
import os
import platform
import shutil
import subprocess
import sys
import time
import warnings

STARTED = time.time()  # (a command's start: its train phase's seconds count from here)
ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
X86_64 = platform.machine().lower() in ("x86_64", "amd64")


def tensorflow_imported():
    return sys.modules.get("tensorflow") is not None


def use_onednn():
    """Asks TensorFlow for its oneDNN CPU kernels: sets `TF_ENABLE_ONEDNN_OPTS=1` on x86-64
    when the variable is unset. Call it before anything imports TensorFlow; after, it changes
    nothing and warns. Returns the value TensorFlow reads (None: its own default)."""
    if ONEDNN not in os.environ and X86_64:
        if tensorflow_imported():
            warnings.warn("byol_tf_runtime.use_onednn() after TensorFlow was imported changes "
                          "nothing: call it first, or set TF_ENABLE_ONEDNN_OPTS=1 in the shell",
                          stacklevel=2)
        else:
            os.environ[ONEDNN] = "1"
    return os.environ.get(ONEDNN)


def quiet_startup():
    """Sets `TF_CPP_MIN_LOG_LEVEL=1` (no C++ INFO lines) when unset, before TensorFlow loads."""
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ and not tensorflow_imported():
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"


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


@contextlib.contextmanager
def startup_notices_dropped():
    """Within: stderr (file descriptor 2, where C++ writes) goes through `grep -v -E
    STARTUP_NOTICES`, a separate process that writes every other line to the real stderr as
    it comes — so a message printed just before a crash inside the window is still shown.
    Does nothing when `TF_CPP_MIN_LOG_LEVEL=0`, or when stderr cannot be redirected or grep
    cannot be started. For a program's own process (the commands), never a library's."""
    grep = shutil.which("grep")
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0" or grep is None:
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


def prepare_process():
    """A command's start: oneDNN kernels, quiet start-up, then Keras and its backend loaded
    with TensorFlow's start-up notices dropped."""
    use_onednn()
    quiet_startup()
    with startup_notices_dropped():
        import keras  # noqa: F401

        if keras.backend.backend() == "tensorflow":  # (TensorFlow probes CUDA here, once)
            import tensorflow as tf

            tf.config.list_physical_devices()


def _command(name):
    prepare_process()
    return importlib.import_module(f"byol_tf.cli.{name}").run()


def train():
    """`byol-train`: pretrain → evaluate → export → zoo entry (byol_tf/cli/train.py)."""
    return _command("train")


def evaluate():
    """`byol-eval`: kNN, linear, fine-tune, semi-supervised (byol_tf/cli/eval.py)."""
    return _command("eval")


def zoo():
    """`byol-zoo`: list, info, fetch (byol_tf/cli/zoo.py)."""
    return _command("zoo")


def convert():
    """`byol-convert`: DeepMind's checkpoints as zoo entries (byol_tf/cli/convert.py)."""
    return _command("convert")
