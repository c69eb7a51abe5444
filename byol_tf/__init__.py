"""byol_tf: BYOL (Bootstrap Your Own Latent) for Keras 3 / TensorFlow."""

from byol_tf import augment, encoders, optimizers, schedules, zoo
from byol_tf.byol import BYOL, MLP, projection_std, regression_loss
from byol_tf.moco import MoCo
from byol_tf.multiview import MultiView
from byol_tf.simclr import SimCLR
from byol_tf.two_view import TwoViewModel
from byol_tf.optimizers import LARS
from byol_tf.schedules import WarmupCosine, target_decay

__version__ = "0.1.0"
__all__ = ["BYOL", "MLP", "LARS", "MoCo", "MultiView", "SimCLR", "TwoViewModel", "WarmupCosine", "augment", "encoders", "optimizers",
           "projection_std", "regression_loss", "schedules", "target_decay", "zoo"]
