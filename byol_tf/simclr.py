"""`byol_tf.SimCLR` (Chen et al. 2020) on the shared two-view machinery.

encoder → projector MLP (`Dense → BN → ReLU → Dense`); NT-Xent over the 2N views of the
global batch (`byol_tf.losses.nt_xent`): under a multi-replica strategy every replica's
projections are gathered (differentiably) so each anchor sees all 2N − 2 negatives.
"""

import keras

from byol_tf.layers import MLP
from byol_tf.distribute import gather_replicas
from byol_tf.losses import nt_xent
from byol_tf.two_view import TwoViewModel, projection_std


@keras.saving.register_keras_serializable(package="byol_tf")
class SimCLR(TwoViewModel):
    """SimCLR around any Keras encoder `images [B, H, W, 3] → representation [B, D]`.

    Args:
      encoder: a built `keras.Model`, or a name from `byol_tf.encoders.ARCHITECTURES`.
      projection_dim: int. Output size of the projector. Defaults to 128.
      hidden_dim: int. Hidden size of the projector. Defaults to 2048.
      temperature: float. NT-Xent temperature; 0.1 is the paper's ImageNet setting, 0.5
        suits CIFAR. Defaults to 0.1.
      sync_batch_norm: bool. Projector batch norm over the global batch under a
        multi-replica strategy. Defaults to True.
      **kwargs: `TwoViewModel`'s arguments (total_steps, num_classes, image_size, augment,
        view1, view2, seed).
    """

    metric_names = ("projection_std",)

    def __init__(self, encoder, projection_dim=128, hidden_dim=2048, temperature=0.1,
                 sync_batch_norm=True, **kwargs):
        super().__init__(encoder, **kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.temperature, self.sync_batch_norm = float(temperature), sync_batch_norm
        self.projector = MLP(hidden_dim, projection_dim, self.representation_dim,
                             sync_batch_norm, name="projector")
        self.built = True

    def compute_ssl_loss(self, view1, view2, targets):
        (h1, z1), (_, z2) = self.encode(view1, self.projector), self.encode(view2, self.projector)
        (z1_all, offset), (z2_all, _) = gather_replicas(z1), gather_replicas(z2)
        loss = nt_xent(z1, z2, self.temperature, z1_all, z2_all, offset)
        return loss, {"projection_std": projection_std(z1)}, h1

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim,
                "hidden_dim": self.hidden_dim, "temperature": self.temperature,
                "sync_batch_norm": self.sync_batch_norm}
