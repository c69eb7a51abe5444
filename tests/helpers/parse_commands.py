"""Parses command lines with one byol_tf command's flags, as the installed command does, and
prints one JSON line: [error or null for each]. Flag names and values are checked (types,
enums, required flags); nothing runs.

    python tests/helpers/parse_commands.py train|eval|convert < lines.json
"""

import importlib
import json
import sys


def main(command):
    from absl import flags

    importlib.import_module(f"byol_tf.cli.{command}")  # (defines the command's flags)
    errors = []
    for argv in json.load(sys.stdin):
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(argv)
            errors.append(None)
        except flags.Error as error:
            errors.append(str(error))
    print(json.dumps(errors))


if __name__ == "__main__":
    main(sys.argv[1])
