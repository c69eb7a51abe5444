"""`byol_tf.MultiView`: the multi-view objective of Tsai et al. (ICLR 2021, "Self-supervised
Learning from a Multi-view Perspective") on the shared two-view machinery.

    L = λ_CL·L_CL + λ_FP·L_FP + λ_IP·L_IP

with z_x, z_s the projections of the two views (encoder → MLP projector):
  L_CL: contrastive InfoNCE between z_x and z_s (the global batch as negatives, gathered
        from every replica; temperature T), averaged over both directions;
  L_FP: forward-predictive: a decoder reconstructs the other view from a representation
        (here: from the representation of each view, the other view average-pooled to
        `reconstruct_size`² pixels and normalised; mean over samples of the squared error
        summed over pixels), averaged over both directions;
  L_IP: inverse-predictive `‖z_x − z_s‖²` on l2-normalised projections (so its scale
        matches L_CL's cosines).
Defaults λ_CL = 1, λ_FP = 0.005 (the paper reports L_CL + 0.005·L_FP above L_CL alone),
λ_IP = 1 (L_CL + L_IP also helped there).
"""

import keras
from keras import layers, ops

from byol_tf.layers import MLP
from byol_tf.distribute import gather_replicas
from byol_tf.losses import forward_predictive, infonce, inverse_predictive, l2_normalize
from byol_tf.two_view import TwoViewModel, at_least_float32, projection_std


@keras.saving.register_keras_serializable(package="byol_tf")
class MultiView(TwoViewModel):
    """The multi-view objective around any Keras encoder `images → representation [B, D]`.

    Args:
      encoder: a built `keras.Model`, or a name from `byol_tf.encoders.ARCHITECTURES`.
      projection_dim: int. Output size of the projector. Defaults to 128.
      hidden_dim: int. Hidden size of the projector and the decoder. Defaults to 2048.
      temperature: float. Temperature of L_CL. Defaults to 0.1.
      lambda_cl: float. Weight of the contrastive term. Defaults to 1.0.
      lambda_fp: float. Weight of the forward-predictive term. Defaults to 0.005.
      lambda_ip: float. Weight of the inverse-predictive term. Defaults to 1.0.
      reconstruct_size: int. Side, in pixels, of the reconstructed other view. Defaults to 8.
      sync_batch_norm: bool. Projector batch norm over the global batch under a
        multi-replica strategy. Defaults to True.
      **kwargs: `TwoViewModel`'s arguments (total_steps, num_classes, image_size, augment,
        view1, view2, seed).
    """

    metric_names = ("projection_std", "loss_cl", "loss_fp", "loss_ip")

    def __init__(self, encoder, projection_dim=128, hidden_dim=2048, temperature=0.1,
                 lambda_cl=1.0, lambda_fp=0.005, lambda_ip=1.0, reconstruct_size=8,
                 sync_batch_norm=True, **kwargs):
        super().__init__(encoder, **kwargs)
        if temperature <= 0 or min(lambda_cl, lambda_fp, lambda_ip) < 0 or reconstruct_size < 1:
            raise ValueError("need temperature > 0, λ ≥ 0 and reconstruct_size ≥ 1")
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.temperature = float(temperature)
        self.lambda_cl, self.lambda_fp = float(lambda_cl), float(lambda_fp)
        self.lambda_ip, self.reconstruct_size = float(lambda_ip), int(reconstruct_size)
        self.sync_batch_norm = sync_batch_norm
        dim = self.representation_dim
        self.projector = MLP(hidden_dim, projection_dim, dim, sync_batch_norm, name="projector")
        side = self.reconstruct_size
        self.decoder = keras.Sequential([
            keras.Input((dim,)), layers.Dense(hidden_dim, activation="relu", name="hidden"),
            layers.Dense(side * side * 3, name="pixels"), layers.Reshape((side, side, 3))],
            name="decoder")
        self.built = True

    def _small(self, view):
        """The view, normalised and average-pooled to reconstruct_size² pixels."""
        x = self.converter(view)
        pool = ops.shape(x)[1] // self.reconstruct_size
        return ops.average_pool(x, pool, pool, padding="valid")

    def compute_ssl_loss(self, view1, view2, targets):
        (h1, z1), (h2, z2) = self.encode(view1, self.projector), self.encode(view2, self.projector)
        (z1_all, offset), (z2_all, _) = gather_replicas(z1), gather_replicas(z2)
        loss_cl = (infonce(z1, z2, self.temperature, z2_all, offset) +
                   infonce(z2, z1, self.temperature, z1_all, offset)) / 2.0
        loss_fp = 0.0
        if self.lambda_fp:
            loss_fp = (forward_predictive(at_least_float32(self.decoder(h1)), self._small(view2)) +
                       forward_predictive(at_least_float32(self.decoder(h2)), self._small(view1))) / 2.0
        loss_ip = inverse_predictive(l2_normalize(z1), l2_normalize(z2))
        loss = self.lambda_cl * loss_cl + self.lambda_fp * loss_fp + self.lambda_ip * loss_ip
        logs = dict(projection_std=projection_std(z1), loss_cl=loss_cl, loss_fp=loss_fp,
                    loss_ip=loss_ip)
        return loss, logs, h1

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim,
                "hidden_dim": self.hidden_dim, "temperature": self.temperature,
                "lambda_cl": self.lambda_cl, "lambda_fp": self.lambda_fp,
                "lambda_ip": self.lambda_ip, "reconstruct_size": self.reconstruct_size,
                "sync_batch_norm": self.sync_batch_norm}
