"""byol_tf's choice of TensorFlow CPU kernels (byol_tf/runtime.py), each case in a fresh
process: oneDNN on x86-64 unless the user says otherwise, a warning when TensorFlow came
first with Eigen's kernels, and the same BYOL step either way."""

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
REPORT = """
import json, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    {imports}
from tensorflow.python.util import _pywrap_util_port
print(json.dumps(dict(onednn=bool(_pywrap_util_port.IsMklEnabled()),
                      warned=[str(w.message) for w in caught if "Eigen" in str(w.message)])))
"""


def _run(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not X86, reason="byol_tf changes nothing off x86-64")
def test_import_byol_tf_first_turns_onednn_on():
    out = _run(REPORT.format(imports="import byol_tf"))
    assert out == {"onednn": True, "warned": []}


def test_the_users_setting_wins():
    out = _run(REPORT.format(imports="import byol_tf"), TF_ENABLE_ONEDNN_OPTS="0")
    assert out == {"onednn": False, "warned": []}


@pytest.mark.skipif(not X86, reason="byol_tf changes nothing off x86-64")
def test_tensorflow_imported_first_warns_exactly_when_it_runs_eigen():
    out = _run(REPORT.format(imports="import tensorflow; import byol_tf"))
    # TensorFlow's own default decides (oneDNN on CPUs with AVX512-VNNI/BF16 or AMX).
    assert bool(out["warned"]) == (not out["onednn"])
    if out["warned"]:
        assert "TF_ENABLE_ONEDNN_OPTS=1" in out["warned"][0]


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
        out = _run(STEP.replace("sys.argv[1]", repr(str(path))), TF_ENABLE_ONEDNN_OPTS=setting)
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
        from byol_tf import runtime
        with runtime.startup_notices_dropped():
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
        from byol_tf import runtime
        with runtime.startup_notices_dropped():
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
