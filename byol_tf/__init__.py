"""byol_tf: BYOL (Bootstrap Your Own Latent) for Keras 3 / TensorFlow."""

from byol_tf import runtime

runtime.choose_cpu_kernels()  # before anything imports TensorFlow (byol_tf/runtime.py)
runtime.warn_if_eigen_kernels()

from byol_tf import augment, encoders, optimizers, schedules, zoo
from byol_tf.byol import BYOL
from byol_tf.image_encoder import ImageEncoder
from byol_tf.layers import MLP
from byol_tf.losses import regression_loss
from byol_tf.moco import MoCo
from byol_tf.multiview import MultiView
from byol_tf.optimizers import LARS
from byol_tf.preprocessing import ImageConverter
from byol_tf.schedules import WarmupCosine, target_decay
from byol_tf.simclr import SimCLR
from byol_tf.two_view import TwoViewModel, projection_std

__version__ = "0.1.0"
__all__ = ["BYOL", "ImageConverter", "ImageEncoder", "LARS", "MLP", "MoCo", "MultiView", "SimCLR",
           "TwoViewModel", "WarmupCosine", "augment", "encoders", "optimizers", "projection_std",
           "regression_loss", "runtime", "schedules", "target_decay", "zoo"]
