"""Runs a Python program as on a machine without TensorFlow (a JAX-only GPU host, say):

    python tests/helpers/without_tensorflow.py PROGRAM.py ARGS...

`import tensorflow` (and TFDS, which needs it) raises ImportError in that process."""

import runpy
import sys

sys.modules["tensorflow"] = None
sys.modules["tensorflow_datasets"] = None
program, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(program, run_name="__main__")
