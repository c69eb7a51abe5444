"""The process byol_tf runs in, each case in a fresh process: `import byol_tf` changes nothing
in it; `byol_tf_runtime` (what the commands do before TensorFlow loads) turns oneDNN on
(x86-64) unless the user says otherwise and drops TensorFlow's start-up notices; the same
BYOL step either way."""

import json
import os
import pathlib
import platform
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
X86 = platform.machine().lower() in ("x86_64", "amd64")
LIBRARY = ["byol_tf", "byol_tf.data", "byol_tf.evaluation", "byol_tf.export", "byol_tf.zoo",
           "byol_tf.hub", "byol_tf.convert", "byol_tf.distribute", "byol_tf.training"]

SIDE_EFFECTS = """
import importlib, json, os, sys
import keras, tensorflow as tf  # the framework's own import, and its effects, come first
from tensorflow.python.eager import context

def fds():
    return [(s.st_dev, s.st_ino) for s in map(os.fstat, range(3))]

started = []
sys.addaudithook(lambda event, args: started.append(event) if event in (
    "subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec",
    "os.system", "os.startfile") else None)
environ, before, policy = dict(os.environ), fds(), keras.mixed_precision.global_policy().name
sys.stderr.write("<<marker>>\\n"); sys.stderr.flush()
for name in {library}:
    importlib.import_module(name)
sys.stderr.flush()
print(json.dumps(dict(
    started=started, fds_same=fds() == before,
    environ_changed=sorted(k for k in set(environ) | set(os.environ)
                           if environ.get(k) != os.environ.get(k)),
    devices_listed=context.context()._physical_devices is not None,
    policy_same=keras.mixed_precision.global_policy().name == policy,
    floatx=keras.backend.floatx())))
"""


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**environ, **env}, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_importing_the_library_starts_no_process_and_changes_nothing():
    """After Keras and TensorFlow (whose own import sets variables and runs `uname`), importing
    byol_tf and its library modules starts no process, keeps file descriptors 0-2 and
    `os.environ` as they were, lists no device, keeps Keras' global state and writes nothing
    to stderr."""
    out, stderr = _run(SIDE_EFFECTS.format(library=LIBRARY))
    assert out == dict(started=[], fds_same=True, environ_changed=[], devices_listed=False,
                       policy_same=True, floatx="float32")
    assert stderr.split("<<marker>>\n", 1)[1] == ""


def test_importing_byol_tf_first_leaves_the_environment_as_importing_keras_does():
    report = ("import json, os\nimport {}\n"
              "print(json.dumps(dict(os.environ)))")
    with_keras, _ = _run(report.format("keras"))
    with_byol_tf, _ = _run(report.format("byol_tf"))
    assert with_byol_tf == with_keras
    assert "TF_ENABLE_ONEDNN_OPTS" not in with_byol_tf


ONEDNN = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    {imports}
from tensorflow.python.util import _pywrap_util_port
print(json.dumps(dict(onednn=bool(_pywrap_util_port.IsMklEnabled()),
                      warned=[str(w.message) for w in caught if "use_onednn" in str(w.message)])))
"""


@pytest.mark.skipif(not X86, reason="use_onednn changes nothing off x86-64")
def test_use_onednn_before_tensorflow_turns_onednn_on():
    out, _ = _run(ONEDNN.format(imports="import byol_tf_runtime; byol_tf_runtime.use_onednn(); "
                                        "import byol_tf"))
    assert out == {"onednn": True, "warned": []}


def test_the_users_setting_wins():
    out, _ = _run(ONEDNN.format(imports="import byol_tf_runtime; byol_tf_runtime.use_onednn(); "
                                        "import byol_tf"), TF_ENABLE_ONEDNN_OPTS="0")
    assert out == {"onednn": False, "warned": []}


@pytest.mark.skipif(not X86, reason="use_onednn changes nothing off x86-64")
def test_use_onednn_after_tensorflow_warns_and_changes_nothing():
    out, _ = _run(ONEDNN.format(imports="import tensorflow, os, byol_tf_runtime; "
                                        "assert byol_tf_runtime.use_onednn() is None; "
                                        "assert 'TF_ENABLE_ONEDNN_OPTS' not in os.environ"))
    assert len(out["warned"]) == 1 and "TF_ENABLE_ONEDNN_OPTS=1" in out["warned"][0]


@pytest.mark.skipif(not X86, reason="use_onednn changes nothing off x86-64")
def test_a_commands_process_runs_onednn_without_tensorflows_startup_notices():
    program = ("import json, os, byol_tf_runtime\nbyol_tf_runtime.prepare_process()\n"
               "from byol_tf import runtime\n"
               "print(json.dumps(dict(onednn=runtime.onednn_enabled(), "
               "level=os.environ['TF_CPP_MIN_LOG_LEVEL'])))")
    out, stderr = _run(program)
    assert out == dict(onednn=True, level="1")
    assert "cudart_stub" not in stderr and "oneDNN custom operations" not in stderr
    shown, stderr = _run(program, TF_CPP_MIN_LOG_LEVEL="0")  # the user asks for everything
    assert shown["level"] == "0" and "oneDNN custom operations are on" in stderr


STEP = """
import json, sys
import numpy as np
import byol_tf, keras
sys.path.insert(0, "tests")
from helpers.models import tiny_byol
from byol_tf.compat import onednn_enabled
model = tiny_byol()
before = [w.numpy().copy() for w in model.online_encoder.trainable_weights]
images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
logs = model.fit(images, batch_size=16, epochs=2, verbose=0, shuffle=False).history
after = [w.numpy() for w in model.online_encoder.trainable_weights]
np.savez(sys.argv[1], *[a - b for a, b in zip(after, before)])
print(json.dumps(dict(onednn=onednn_enabled(), loss=logs["loss"])))
"""


@pytest.mark.skipif(not X86, reason="byol_tf changes nothing off x86-64")
def test_onednn_and_eigen_steps_agree(tmp_path):
    """Two BYOL steps (augmentation, both networks, LARS, EMA) from the same initial weights
    move the encoder's weights the same way with either kernel library (float32 rounding)."""
    runs = {}
    for setting in ("1", "0"):
        path = tmp_path / f"delta{setting}.npz"
        out, _ = _run(STEP.replace("sys.argv[1]", repr(str(path))), TF_ENABLE_ONEDNN_OPTS=setting,
                      TF_CPP_MIN_LOG_LEVEL="2")
        assert out["onednn"] == (setting == "1")
        runs[setting] = (out["loss"], list(np.load(path).values()))
    (loss_on, delta_on), (loss_off, delta_off) = runs["1"], runs["0"]
    np.testing.assert_allclose(loss_on, loss_off, rtol=1e-4)
    for on, off in zip(delta_on, delta_off):
        scale = np.abs(off).max()
        assert scale > 0  # the step moved every weight tensor
        np.testing.assert_allclose(on, off, atol=5e-3 * scale)


def test_startup_notices_are_dropped_and_everything_else_kept():
    """Lines written to file descriptor 2 (as C++ writes) inside the window: TensorFlow's
    start-up notices are dropped, any other line comes back in order; Python's own stderr too."""
    program = textwrap.dedent(r"""
        import os, sys
        import byol_tf_runtime
        with byol_tf_runtime.startup_notices_dropped():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
            os.write(2, b"I0000 00:00:17.1 21679 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.\n")
            os.write(2, b"E0000 00:00:17.2 21679 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n")
            os.write(2, b"F0000 00:00:17.3 21679 some_kernel.cc:9] a real failure\n")
            print("python's own warning", file=sys.stderr)
        os.write(2, b"after the window\n")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            env=dict(env, PYTHONPATH=str(ROOT)), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "F0000 00:00:17.3 21679 some_kernel.cc:9] a real failure", "python's own warning",
        "after the window"]
    kept = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env=dict(env, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="0"),
                          timeout=300)
    assert "Could not find cuda drivers" in kept.stderr and "cuInit" in kept.stderr


def test_a_crash_inside_the_window_still_shows_what_was_printed_before_it():
    program = textwrap.dedent(r"""
        import os
        import byol_tf_runtime
        with byol_tf_runtime.startup_notices_dropped():
            os.write(2, b"I0000 00:00:17.1 1 cudart_stub.cc:31] Could not find cuda drivers on your machine\n")
            os.write(2, b"The TensorFlow library was compiled to use AVX instructions, but these aren't available\n")
            os.abort()
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                            env=dict(env, PYTHONPATH=str(ROOT)), timeout=300)
    assert result.returncode != 0
    assert "compiled to use AVX instructions" in result.stderr
    assert "cudart_stub" not in result.stderr
