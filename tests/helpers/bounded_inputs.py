"""Reads every hostile file in a folder with the library call that takes its kind, and prints
one JSON line {file: "refused: <message>" | "accepted" | "<exception type>: <message>"}.
Run under a memory limit by tests/test_hostile_inputs.py: a file that asks for more memory
than the limit ends as a MemoryError (or kills the process) instead of a refusal.

    python tests/helpers/bounded_inputs.py FOLDER
"""

import json
import pathlib
import sys


def read(path):
    from byol_tf import convert, hub
    from byol_tf.data import folders, sample
    from byol_tf.image_encoder import load_image_encoder

    from byol_tf import zoo

    suffix = path.suffix
    if path.is_dir() and (path / hub.CARD).is_file():  # a zoo entry
        zoo.load(str(path))
    elif path.is_dir():  # an image folder
        folders.list_folder(path)
    elif suffix == ".keras":
        load_image_encoder(path)
    elif suffix == ".pkl":
        convert.from_deepmind(path, image_size=32)
    elif suffix == ".npz":
        sample.load_npz(path)
    elif suffix == ".json":
        hub.read_card(path, path.stem)
    else:
        raise SystemExit(f"no reader for {path}")


def main(folder):
    outcomes = {}
    for path in sorted(pathlib.Path(folder).iterdir()):
        try:
            read(path)
            outcomes[path.name] = "accepted"
        except ValueError as error:  # (DataError, ConversionError, ModelFileError)
            outcomes[path.name] = f"refused: {error}"
        except Exception as error:  # noqa: BLE001 (what the test reports)
            outcomes[path.name] = f"{type(error).__name__}: {str(error)[:300]}"
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main(sys.argv[1])
