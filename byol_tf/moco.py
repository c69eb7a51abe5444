"""`byol_tf.MoCo` v2 (Chen et al. 2020, "Improved baselines with momentum contrastive
learning") on the shared two-view machinery.

Query: encoder → MLP head (`Dense → ReLU → Dense`). Key: a momentum copy of both,
ξ ← m·ξ + (1 − m)·θ after every step (m = 0.999), run in training mode without gradient.
Loss: InfoNCE with temperature 0.2 between the query of view 1 and the key of view 2,
against a queue of K earlier keys (`byol_tf.losses.moco_infonce`). The queue is a ring
buffer (a non-trainable model variable, saved and restored with the model): after the
optimizer step the keys of the whole global batch (gathered from every replica, in replica
order) overwrite its oldest rows, so a batch's own keys are never its negatives. K must be
a multiple of the global batch (as in MoCo). Batch norm: global statistics under a
strategy (`sync_batch_norm`) instead of MoCo's shuffled BN.
"""

import keras
from keras import ops

from byol_tf.layers import MLP
from byol_tf.distribute import gather_replicas
from byol_tf.losses import l2_normalize, moco_infonce
from byol_tf.two_view import TwoViewModel, at_least_float32, projection_std


@keras.saving.register_keras_serializable(package="byol_tf")
class MoCo(TwoViewModel):
    """MoCo v2 around any Keras encoder `images [B, H, W, 3] → representation [B, D]`.

    Args:
      encoder: a built `keras.Model`, or a name from `byol_tf.encoders.ARCHITECTURES`.
      projection_dim: int. Output size of the head. Defaults to 128.
      hidden_dim: int. Hidden size of the head. Defaults to 2048.
      queue_size: int. K, the number of earlier keys used as negatives; a multiple of the
        global batch (65536 for ImageNet, e.g. 4096 for CIFAR). Defaults to 65536.
      momentum: float. m of the key networks' update ξ ← m·ξ + (1 − m)·θ. Defaults to 0.999.
      temperature: float. InfoNCE temperature. Defaults to 0.2.
      **kwargs: `TwoViewModel`'s arguments (total_steps, num_classes, image_size, augment,
        view1, view2, seed).
    """

    metric_names = ("projection_std",)

    def __init__(self, encoder, projection_dim=128, hidden_dim=2048, queue_size=65536,
                 momentum=0.999, temperature=0.2, **kwargs):
        super().__init__(encoder, **kwargs)
        if queue_size < 1 or not 0.0 <= momentum <= 1.0 or temperature <= 0:
            raise ValueError(f"need queue_size ≥ 1, momentum in [0, 1], temperature > 0; got "
                             f"{queue_size}, {momentum}, {temperature}")
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.queue_size, self.momentum = int(queue_size), float(momentum)
        self.temperature = float(temperature)
        dim = self.representation_dim
        self.head = MLP(hidden_dim, projection_dim, dim, name="head", norm="none")
        self.key_encoder = keras.models.clone_model(self.online_encoder)
        self.key_encoder.name = "key_" + self.online_encoder.name
        self.key_head = MLP(hidden_dim, projection_dim, dim, name="key_head", norm="none")
        self.start_ema_copy(self.key_pairs(all_weights=True))
        queue = keras.random.normal((self.queue_size, projection_dim), seed=self.seed)
        self.queue = self.add_weight(shape=(self.queue_size, projection_dim), name="queue",
                                     initializer="zeros", trainable=False,
                                     aggregation="only_first_replica")
        self.queue.assign(l2_normalize(queue))
        self.queue_pointer = self.add_weight(shape=(), name="queue_pointer", dtype="int32",
                                             initializer="zeros", trainable=False,
                                             aggregation="only_first_replica")
        self.built = True

    def ema_copies(self):
        return self.key_pairs(all_weights=True)

    def key_pairs(self, all_weights=False):
        """[(key variable, query variable)] of key and online encoder and head: the trainable
        ones (the EMA's), or every weight."""
        keys = self.key_encoder.weights + self.key_head.weights
        queries = self.online_encoder.weights + self.head.weights
        return [(k, q) for k, q in zip(keys, queries) if all_weights or q.trainable]

    def target_forward(self, view1, view2):
        """l2-normalised keys of view 2 `[B, P]` from the momentum networks."""
        h = self.key_encoder(self.converter(view2), training=True)
        return ops.stop_gradient(l2_normalize(at_least_float32(self.key_head(h, training=True))))

    def compute_ssl_loss(self, view1, view2, keys):
        h1, q = self.encode(view1, self.head)
        queue = ops.cast(ops.stop_gradient(self.queue), q.dtype)
        return (moco_infonce(q, keys, queue, self.temperature),
                {"projection_std": projection_std(q)}, h1)

    def after_update(self, keys, scalars):
        if getattr(self.optimizer, "gradient_accumulation_steps", None):
            raise ValueError("MoCo with gradient accumulation: its queue would take one "
                             "micro-batch's keys per optimizer step; train MoCo without it")
        self.ema_update(self.key_pairs(), self.momentum)  # key ← m·key + (1 − m)·query
        self.enqueue(gather_replicas(keys)[0])

    def enqueue(self, keys):
        """Writes `keys [N, P]` over the N oldest rows (ring buffer); N divides K."""
        n = keys.shape[0]
        if n is not None and self.queue_size % n:
            raise ValueError(f"MoCo queue_size {self.queue_size} must be a multiple of the "
                             f"global batch size {n}")
        pointer = self.queue_pointer.value
        self.queue.assign(ops.slice_update(self.queue.value, [pointer, 0],
                                           ops.cast(keys, self.queue.dtype)))
        self.queue_pointer.assign((pointer + ops.shape(keys)[0]) % self.queue_size)

    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim,
                "hidden_dim": self.hidden_dim, "queue_size": self.queue_size,
                "momentum": self.momentum, "temperature": self.temperature}
