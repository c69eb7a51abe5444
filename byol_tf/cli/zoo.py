"""`byol-zoo`: the model zoo from the shell.

    byol-zoo list                     # the published entries: name, architecture, data, results
    byol-zoo info NAME_OR_HANDLE      # one entry's model card (JSON)
    byol-zoo fetch NAME_OR_HANDLE     # fetch and verify it into the cache; print its folder
"""

import json
import sys


def main(argv):
    from byol_tf import hub, zoo
    from byol_tf.image_encoder import fetch_checkpoint

    usage = __doc__.strip().split("\n\n", 1)[1]
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    if len(argv) < 1 or argv[0] not in ("list", "info", "fetch") or (
            argv[0] != "list" and len(argv) != 2) or (argv[0] == "list" and len(argv) != 1):
        print(usage, file=sys.stderr)
        return 2
    try:
        if argv[0] == "list":
            for name, record in hub.registry().items():
                results = record.get("results", {})
                scores = ", ".join(f"{k} {v:.4f}" for k, v in results.items()
                                   if isinstance(v, float))
                print(f"{name}\t{record.get('architecture')}\t{record.get('dataset')}\t{scores}")
        elif argv[0] == "info":
            print(json.dumps(zoo.info(argv[1]), indent=2))
        else:
            entry = hub.resolve(argv[1])
            if hub.imported(entry.card):
                path, _ = fetch_checkpoint(entry)  # (the weights are the authors' file)
                print(path.parent)
            else:
                print(entry.folder)
    except (ValueError, OSError) as error:
        print(f"byol-zoo: {error}", file=sys.stderr)
        return 1
    return 0


def run():
    """The `byol-zoo` command."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    run()
