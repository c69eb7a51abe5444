"""The commands installed with byol_tf: `byol-train`, `byol-eval`, `byol-zoo`, `byol-convert`
(the repository's `train.py` and `eval.py` run the same programs). Their entry points are in
`byol_tf_runtime`, which prepares the process (TensorFlow's CPU kernels, its start-up lines)
before TensorFlow loads, then runs `run()` of the module here.

Each command module defines its flags in absl's global `flags.FLAGS` when imported, and the
commands share flag names (`--dataset`, `--batch_size`, ...): import one command module per
process. What a command does that a Python user may want lives in the library (for example
`byol_tf.image_encoder.load_image_encoder` behind `byol-eval --model`)."""

import logging
import os
import sys

from absl import app, flags
from absl import logging as absl_logging

HELP = ("-h", "--help", "--helpshort", "-?")


def fail(message, status=2):
    """Ends the program the way command-line tools do: one line naming the problem, status 2
    (a usage error) or `status`."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    sys.exit(status)


def quiet_logs():
    """The commands' default log: warnings and errors, and what the program prints itself;
    `--verbosity=0` (INFO) or higher shows the frameworks' INFO lines too (TensorFlow's C++
    start-up lines: TF_CPP_MIN_LOG_LEVEL=0, see byol_tf_runtime)."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def run_app(main, module, doc=""):
    """`absl.app.run(main)` for a command whose flags are defined in `module` (its
    `__name__`), as a command-line tool: `--help` prints `doc` and the program's flags and
    exits 0 (wherever it was started from: an installed command, `train.py`, `python -m`); a
    bad flag or a `UsageError` prints one line and exits 2; the log is `quiet_logs` unless
    `--verbosity` is given."""
    defined_in = sys.argv[0] if module == "__main__" else module
    for flag in flags.FLAGS.get_key_flags_for_module(defined_in):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    if any(arg in HELP for arg in sys.argv[1:]):
        print(f"{doc.strip()}\n\nFlags:\n{flags.FLAGS.main_module_help()}")
        sys.exit(0)

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(error)

    def guarded(argv):
        if not flags.FLAGS["verbosity"].present:
            quiet_logs()
        try:
            return main(argv)
        except app.UsageError as error:
            fail(error)

    app.run(guarded, flags_parser=parse)
