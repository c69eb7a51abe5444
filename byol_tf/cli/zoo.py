"""`byol-zoo`: the model zoo from the shell.

    byol-zoo list                     # the published entries: name, architecture, data, results
    byol-zoo info NAME_OR_HANDLE      # one entry's model card (JSON)
    byol-zoo fetch NAME_OR_HANDLE     # fetch and verify it into the cache; print its folder
"""

import json
import sys


def main(argv):
    from byol_tf import hub, zoo

    if len(argv) < 1 or argv[0] not in ("list", "info", "fetch") or (
            argv[0] != "list" and len(argv) != 2) or (argv[0] == "list" and len(argv) != 1):
        print(__doc__.strip().split("\n\n", 1)[1], file=sys.stderr)
        return 2
    try:
        if argv[0] == "list":
            for name, record in hub.registry().items():
                results = record.get("results", {})
                scores = ", ".join(f"{k} {v}" for k, v in results.items() if isinstance(v, float))
                print(f"{name}\t{record.get('architecture')}\t{record.get('dataset')}\t{scores}")
        elif argv[0] == "info":
            print(json.dumps(zoo.info(argv[1]), indent=2))
        else:
            print(hub.resolve(argv[1]).folder)
    except (ValueError, OSError) as error:
        print(f"byol-zoo: {error}", file=sys.stderr)
        return 1
    return 0


def run():
    """The `byol-zoo` command."""
    sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
    run()
