"""Rewrites byol_tf/zoo_registry.json from the entries in byol_tf/models/ (the repository's
models/): run it after publishing into the package's zoo (`--zoo_dir=models`).

    python scripts/update_zoo_registry.py
"""

import json
import pathlib

from byol_tf import hub
from byol_tf.files import write_text
from byol_tf.training.publish import registry_record

MODELS = pathlib.Path(hub.__file__).parent / "models"

records = {folder.name: registry_record(folder, f"{hub.PACKAGE}models/{folder.name}")
           for folder in sorted(MODELS.iterdir()) if (folder / hub.CARD).is_file()}
write_text(hub.REGISTRY, json.dumps(records, indent=2) + "\n")
print(f"{hub.REGISTRY}: {', '.join(records)}")
