"""`byol_tf.BYOL`: Bootstrap Your Own Latent (Grill et al. 2020) as a `keras.Model`.

Online network: encoder → projector → predictor. Target network: its own encoder and
projector (no predictor), a copy of the online weights at construction, never given a
gradient; after every optimizer step its weights become τ·ξ + (1−τ)·θ with
τ = 1 − (1−τ_base)(cos(πk/K)+1)/2 and k the optimizer's step counter (so τ survives a
resume). Target batch-norm moving statistics are not averaged: like the official code,
the target keeps its own, updated by its own training-mode forward passes.
"""

import keras
from keras import ops

from byol_tf.layers import MLP
from byol_tf.distribute import gather_replicas
from byol_tf.losses import beta_infonce, regression_loss
from byol_tf.schedules import target_ema
from byol_tf.two_view import TwoViewModel, at_least_float32, projection_std


@keras.saving.register_keras_serializable(package="byol_tf")
class BYOL(TwoViewModel):
    """BYOL around any Keras encoder `images [B, H, W, 3] → representation [B, D]`.

    Args:
      encoder: a built `keras.Model`, or a name from `byol_tf.encoders.ARCHITECTURES`.
      projection_dim: int. Output size of projector and predictor. Defaults to 256.
      hidden_dim: int. Hidden size of the projector and predictor MLPs. Defaults to 4096.
      tau_base: float in [0, 1]. Base EMA rate τ_base of the target network; 0 makes the
        target the online network after every step, 1 keeps it at its initialisation.
        Defaults to 0.996.
      total_steps: int. K of the τ schedule (and of the method's other schedules).
        Defaults to 1000.
      num_classes, image_size, augment, view1, view2, seed: as `TwoViewModel`.
      sync_batch_norm: bool. Projector/predictor batch norm over the global batch under a
        multi-replica strategy (the encoder has its own switch). Defaults to True.
      tau_schedule: "cosine" (the paper: τ_base → 1 over K steps) or "constant" (τ_base
        throughout, for the τ ablations). Defaults to "cosine".
      use_predictor: bool. False drops the predictor (q = z; an ablation). Defaults to True.
      projector_norm: "batch_norm" (the paper), "layer_norm" or "none". Defaults to
        "batch_norm".
      predictor_norm: the same, for the predictor. Defaults to "batch_norm".
      beta: float ≥ 0. Weight of the negative term of the paper's InfoNCE^{α,β} (0: BYOL;
        see `byol_tf.losses.beta_infonce`). Defaults to 0.0.
      alpha: float > 0. Temperature of that term. Defaults to 0.1.

    `model(images)` returns the online representation `[B, D]`; `model.image_encoder()`
    the online encoder behind the model's input contract (`byol_tf.ImageEncoder`).
    """

    metric_names = ("projection_std", "tau")

    def __init__(self, encoder, projection_dim=256, hidden_dim=4096, tau_base=0.996,
                 total_steps=1000, num_classes=None, image_size=None, augment=True,
                 view1=None, view2=None, seed=None, sync_batch_norm=True, tau_schedule="cosine",
                 use_predictor=True, projector_norm="batch_norm", predictor_norm="batch_norm",
                 beta=0.0, alpha=0.1, **kwargs):
        super().__init__(encoder, total_steps=total_steps, num_classes=num_classes,
                         image_size=image_size, augment=augment, view1=view1, view2=view2,
                         seed=seed, **kwargs)
        if not 0.0 <= tau_base <= 1.0:
            raise ValueError(f"tau_base must be in [0, 1]; got {tau_base}")
        if tau_schedule not in ("cosine", "constant"):
            raise ValueError(f"tau_schedule must be 'cosine' or 'constant'; got {tau_schedule!r}")
        if beta < 0 or alpha <= 0:
            raise ValueError(f"beta must be ≥ 0 and alpha > 0; got beta={beta}, alpha={alpha}")
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.tau_base, self.tau_schedule = float(tau_base), tau_schedule
        self.use_predictor, self.beta, self.alpha = use_predictor, float(beta), float(alpha)
        self.projector_norm, self.predictor_norm = projector_norm, predictor_norm
        self.sync_batch_norm = sync_batch_norm

        encoder = self.online_encoder
        self.target_encoder = keras.models.clone_model(encoder)
        self.target_encoder.name = "target_" + encoder.name if not encoder.name.startswith(
            "target_") else encoder.name
        dim = self.representation_dim
        self.online_projector = MLP(hidden_dim, projection_dim, dim, sync_batch_norm,
                                    name="online_projector", norm=projector_norm)
        self.target_projector = MLP(hidden_dim, projection_dim, dim, sync_batch_norm,
                                    name="target_projector", norm=projector_norm)
        self.online_predictor = None
        if use_predictor:
            self.online_predictor = MLP(hidden_dim, projection_dim, projection_dim,
                                        sync_batch_norm, name="online_predictor",
                                        norm=predictor_norm)
        self.start_ema_copy(self.target_pairs(all_weights=True))  # (batch-norm statistics too)
        self.built = True

    def ema_copies(self):
        return self.target_pairs(all_weights=True)

    def target_pairs(self, all_weights=False):
        """[(target variable ξ, online variable θ)] of target and online encoder and projector:
        the trainable ones (the EMA's), or every weight."""
        targets = self.target_encoder.weights + self.target_projector.weights
        onlines = self.online_encoder.weights + self.online_projector.weights
        return [(t, o) for t, o in zip(targets, onlines) if all_weights or o.trainable]

    # -------------------------------------------------------------------- losses
    @property
    def separable_views(self):
        return not self.beta  # β > 0 contrasts each prediction with both views' keys

    def target_forward(self, view1, view2):
        """Target projections z'(v1), z'(v2), each view its own batch (training-mode BN)."""
        outs = []
        for view in (view1, view2):
            h = self.target_encoder(self.converter(view), training=True)
            outs.append(ops.stop_gradient(self.target_projector(h, training=True)))
        return outs

    def online(self, view):
        """Float view → (h, z, q): online representation, projection and prediction
        (q = z without a predictor), z and q in at least float32."""
        h, z = self.encode(view, self.online_projector)
        q = self.online_predictor(z, training=True) if self.use_predictor else z
        return h, z, at_least_float32(q)

    def compute_ssl_loss(self, view1, view2, targets):
        """β = 0: mean 2−2cos(q(z(v1)), z'(v2)) + mean 2−2cos(q(z(v2)), z'(v1)), a term per
        view (a view given as None leaves its term out). β > 0: the paper's InfoNCE^{α,β}
        with the target projections as keys."""
        target1, target2 = (at_least_float32(t) for t in targets)  # the loss in ≥ float32
        if self.beta:
            (h1, z1, q1), (_, _, q2) = self.online(view1), self.online(view2)
            (t1_all, offset), (t2_all, _) = gather_replicas(target1), gather_replicas(target2)
            loss = beta_infonce(q1, q2, target1, target2, self.beta, self.alpha, t1_all,
                                t2_all, offset)
            return loss, {"projection_std": projection_std(z1)}, h1
        loss, logs, h1 = 0.0, {}, None
        if view1 is not None:
            h1, z1, q1 = self.online(view1)
            loss, logs = ops.mean(regression_loss(q1, target2)), {"projection_std": projection_std(z1)}
        if view2 is not None:
            _, _, q2 = self.online(view2)
            loss = loss + ops.mean(regression_loss(q2, target1))
        return loss, logs, h1

    # ------------------------------------------------------------------- target
    def tau(self, step):
        """τ_k, in the target weights' dtype (float64 for a float64 model)."""
        dtype = self.target_pairs()[0][0].dtype if self.target_pairs() else "float32"
        if self.tau_schedule == "constant":
            return ops.convert_to_tensor(self.tau_base, dtype)
        return target_ema(step, self.tau_base, self.total_steps, dtype)

    def step_scalars(self, step):
        return {"tau": self.tau(step)}

    def after_update(self, targets, scalars):
        self.ema_update(self.target_pairs(), scalars["tau"])  # ξ ← τξ + (1 − τ)θ

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {**super().get_config(),
                "projection_dim": self.projection_dim, "hidden_dim": self.hidden_dim,
                "tau_base": self.tau_base, "tau_schedule": self.tau_schedule,
                "use_predictor": self.use_predictor, "projector_norm": self.projector_norm,
                "predictor_norm": self.predictor_norm, "beta": self.beta, "alpha": self.alpha,
                "sync_batch_norm": self.sync_batch_norm}
