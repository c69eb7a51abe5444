"""byol_tf: BYOL (Bootstrap Your Own Latent) for Keras 3 / TensorFlow.

Importing it imports Keras (and its backend) and registers byol_tf's classes for
`keras.models.load_model`; it starts no process and changes neither the environment, nor
stderr, nor the devices. TensorFlow's CPU kernels and start-up lines are the program's
choice, made before TensorFlow loads: see `byol_tf_runtime`.
"""

import importlib

from byol_tf import augment, encoders, optimizers, runtime, schedules  # noqa: E402
from byol_tf.augmenter import Augmenter  # noqa: E402
from byol_tf.byol import BYOL  # noqa: E402
from byol_tf.image_encoder import ImageEncoder  # noqa: E402
from byol_tf.layers import MLP  # noqa: E402
from byol_tf.losses import regression_loss  # noqa: E402
from byol_tf.moco import MoCo  # noqa: E402
from byol_tf.multiview import MultiView  # noqa: E402
from byol_tf.optimizers import LARS  # noqa: E402
from byol_tf.preprocessing import ImageConverter  # noqa: E402
from byol_tf.schedules import WarmupCosine, target_ema  # noqa: E402
from byol_tf.simclr import SimCLR  # noqa: E402
from byol_tf.two_view import TwoViewModel, projection_std  # noqa: E402

__version__ = "0.1.0"
# Imported on first use (`byol_tf.zoo.load(...)` works after `import byol_tf`).
_LAZY = ("convert", "data", "distribute", "evaluation", "export", "training", "zoo")
__all__ = ["Augmenter", "BYOL", "ImageConverter", "ImageEncoder", "LARS", "MLP", "MoCo",
           "MultiView", "SimCLR", "TwoViewModel", "WarmupCosine", "augment", "encoders",
           "optimizers", "projection_std", "regression_loss", "runtime", "schedules",
           "target_ema", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"byol_tf.{name}")
    raise AttributeError(f"module 'byol_tf' has no attribute {name!r}")
