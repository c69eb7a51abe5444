"""The commands installed with byol_tf: `byol-train`, `byol-eval`, `byol-zoo` (the
repository's `train.py` and `eval.py` run the same programs)."""

import sys

from absl import app, flags


def run_app(main, module):
    """`absl.app.run(main)` for a command whose flags are defined in `module` (its
    `__name__`): they become the program's own, so `--help` lists them wherever the program
    was started from (an installed command, `train.py` in a clone, `python -m`)."""
    defined_in = sys.argv[0] if module == "__main__" else module
    for flag in flags.FLAGS.get_key_flags_for_module(defined_in):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)
