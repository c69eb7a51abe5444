"""The commands installed with byol_tf: `byol-train`, `byol-eval`, `byol-zoo`, `byol-convert`
(the repository's `train.py` and `eval.py` run the same programs)."""

import os
import sys

from absl import app, flags

HELP = ("-h", "--help", "--helpshort", "-?")


def fail(message):
    """Ends the program the way command-line tools do: one line naming the problem, status 2."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr)
    sys.exit(2)


def run_app(main, module, doc=""):
    """`absl.app.run(main)` for a command whose flags are defined in `module` (its
    `__name__`), as a command-line tool: `--help` prints `doc` and the program's flags and
    exits 0 (wherever it was started from: an installed command, `train.py`, `python -m`); a
    bad flag or a `UsageError` prints one line and exits 2."""
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
        try:
            return main(argv)
        except app.UsageError as error:
            fail(error)

    app.run(guarded, flags_parser=parse)
