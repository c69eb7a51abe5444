"""Fresh process that imports only TensorFlow (never byol_tf): load a SavedModel as TF
Serving does and call its signatures.

    python tests/helpers/serve_check.py SAVED_MODEL INPUTS.npz OUT.npz
INPUTS.npz: images (uint8 [B, H, W, 3]) and encoded (object array of PNG bytes).
"""

import sys

import numpy as np
import tensorflow as tf

saved_model, inputs, out = sys.argv[1:4]
data = np.load(inputs, allow_pickle=True)
loaded = tf.saved_model.load(saved_model)
signatures = sorted(loaded.signatures.keys())
from_images = loaded.signatures["serving_default"](images=tf.constant(data["images"]))
from_bytes = loaded.signatures["serve_encoded"](encoded=tf.constant(list(data["encoded"])))
errors = []
for name, call in [
        ("rank3", lambda: loaded.signatures["serving_default"](images=tf.zeros((8, 8, 3), tf.uint8))),
        ("one_channel", lambda: loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 1), tf.uint8))),
        ("float", lambda: loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 3)))),
        ("garbage_bytes", lambda: loaded.signatures["serve_encoded"](
            encoded=tf.constant([data["encoded"][0], b"not an image"]))),
        ("encoded_rank0", lambda: loaded.signatures["serve_encoded"](
            encoded=tf.constant(data["encoded"][0]))),
        ("encoded_rank2", lambda: loaded.signatures["serve_encoded"](
            encoded=tf.constant([list(data["encoded"][:2])])))]:
    try:
        call()
        errors.append(f"{name}: accepted")
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as error:
        errors.append(f"{name}: {type(error).__name__}: {' '.join(str(error).split())[:2000]}")
np.savez(out, from_images=from_images["embedding"].numpy(), from_bytes=from_bytes["embedding"].numpy(),
         signatures=np.array(signatures), errors=np.array(errors),
         modules=np.array(sorted(m for m in sys.modules if m.split(".")[0] == "byol_tf")))
