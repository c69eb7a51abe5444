"""`TwoViewModel`: what every two-view self-supervised method shares (a `keras.Model`).

A method subclasses it, builds its networks in `__init__` and writes its loss:

    view1, view2, labels = self.make_views(data)         # augmented per sample, in the step
    targets = self.target_forward(view1, view2)          # no gradient (EMA networks, keys)
    loss, logs, h1 = self.compute_ssl_loss(view1, view2, targets)   # differentiable
    optimizer step; self.after_update(targets, scalars)  # EMA targets, queues

The train steps themselves live in `byol_tf.steps` (one module per backend, as Keras keeps
its trainers). `model(images)` returns the online encoder's representation through the
model's `ImageEncoder` (`model.image_encoder()`).
"""

import keras
from keras import layers, ops

from byol_tf import compat, inputs, steps
from byol_tf import encoders as encoders_lib
from byol_tf.augmenter import Augmenter
from byol_tf.image_encoder import ImageEncoder, static_image_size
from byol_tf.losses import l2_normalize
from byol_tf.preprocessing import ImageConverter


def at_least_float32(x):
    """16-bit floats → float32; float32 and float64 unchanged."""
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        return ops.cast(x, "float32")
    return x


def projection_std(projection):
    """Collapse metric: mean over dimensions of the batch std of l2-normalised
    projections. ≈ 1/√d for a healthy representation, → 0 when it collapses."""
    z = l2_normalize(ops.cast(projection, "float32"))
    return ops.mean(ops.std(z, axis=0))


class TwoViewModel(compat.BuildsOptimizerOnly, keras.Model):
    """Base of BYOL, SimCLR, MoCo v2 and the multi-view objective.

    Args:
      encoder: a built `keras.Model` mapping normalised images `[B, H, W, 3]` to `[B, D]`,
        or a name from `byol_tf.encoders.ARCHITECTURES`.
      total_steps: int. K, the number of optimizer steps the method's schedules span.
        Defaults to 1000.
      num_classes: int or None. If set, an online linear probe on the stop-gradient
        representation of view 1 trains alongside when labels are given. Defaults to None.
      image_size: int or None. Side of the augmented views and of the model's
        `ImageConverter`; None: the encoder's static input side, else the input's own.
        Defaults to None.
      augment: bool. Draw the two views inside the step (`byol_tf.Augmenter`); if False the
        images are used as both views (or the dataset supplies `(view1, view2)`).
        Defaults to True.
      view1: dict or None. First view's augmentation config (`byol_tf.augment`). Defaults
        to the paper's `VIEW1`.
      view2: dict or None. Second view's config. Defaults to the paper's `VIEW2`.
      seed: int or None. Seed of the in-step augmentation. Defaults to None.
    """

    metric_names = ()  # the method's extra logged scalars (from its logs or step_scalars)
    # Whether `compute_ssl_loss` is a sum of one term per view, each from that view's online
    # forward alone (BYOL's): the TF step can then take one view's gradient at a time.
    separable_views = False

    def __init__(self, encoder, total_steps=1000, num_classes=None, image_size=None,
                 augment=True, view1=None, view2=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, str):
            encoder = encoders_lib.get(encoder)
        if not isinstance(encoder, keras.Model) or not encoder.built:
            raise ValueError("encoder must be a built keras.Model mapping images [B, H, W, 3] to "
                             "[B, D]: give it a keras.Input or call encoder.build((None, H, W, 3))")
        if total_steps < 1:
            raise ValueError(f"total_steps must be ≥ 1; got {total_steps}")
        self.total_steps, self.num_classes = int(total_steps), num_classes
        self.image_size, self.augment, self.seed = image_size, augment, seed
        self.online_encoder = encoder
        self.converter = ImageConverter(image_size=image_size or static_image_size(encoder),
                                        name="converter")
        self.augmenter = Augmenter(image_size, view1, view2, seed, name="augmenter")
        self.view1, self.view2 = self.augmenter.view1, self.augmenter.view2
        self.representation_dim = encoder.output_shape[-1]
        self.probe = None
        if num_classes:
            self.probe = layers.Dense(num_classes, name="probe")
            self.probe.build((None, self.representation_dim))
        names = ("loss", *self.metric_names, "learning_rate")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        if num_classes:
            self._trackers["probe_loss"] = keras.metrics.Mean(name="probe_loss")
            self._trackers["probe_accuracy"] = keras.metrics.SparseCategoricalAccuracy(
                name="probe_accuracy")
        self._image_encoder = ImageEncoder(encoder, self.converter)  # (visited last by saving)
        self.per_view_gradients = True  # TF step: one view's gradient at a time when separable

    # ------------------------------------------------------------ method hooks
    def target_forward(self, view1, view2):
        """What the loss needs from networks without gradient (EMA projections, keys)."""
        return None

    def compute_ssl_loss(self, view1, view2, targets):
        """(loss, logs, online representation h of view 1); differentiable in the online
        weights. A method with `separable_views` accepts None for either view and returns
        the other view's term alone (h: None without view 1)."""
        raise NotImplementedError

    def step_scalars(self, step):
        """Scalars of this step read before the optimizer moves (e.g. {"tau": τ_k})."""
        return {}

    def after_update(self, targets, scalars):
        """Updates after the optimizer step (EMA targets, queues)."""

    def ema_copies(self):
        """[(slow, fast)] for every weight of the method's EMA copies (BYOL's target, MoCo's
        key networks) and the online weight it follows; none by default."""
        return []

    def start_from_encoder(self, encoder):
        """Starts training from a pretrained encoder: `encoder`'s weights (a `keras.Model` of
        the online encoder's architecture, e.g. a zoo entry's `ImageEncoder.encoder`) into
        the online encoder, batch-norm statistics included, and every EMA copy restarted
        from the online networks. The heads (projector, predictor, probe) keep their
        initialisation. ValueError when the weights' shapes differ."""
        given, own = encoder.weights, self.online_encoder.weights
        if [tuple(v.shape) for v in given] != [tuple(v.shape) for v in own]:
            raise ValueError(f"the encoder's {len(given)} weights do not match the online "
                             f"encoder's {len(own)} ({self.online_encoder.name}): another "
                             "architecture")
        for variable, value in zip(own, given):
            variable.assign(ops.cast(value, variable.dtype))
        for slow, fast in self.ema_copies():
            slow.assign(ops.copy(fast.value))

    # ------------------------------------------------- EMA copies (targets, keys)
    @staticmethod
    def start_ema_copy(pairs):
        """slow ← fast for each (slow, fast) variable pair, the slow one off the optimizer's
        list: an EMA copy (BYOL's target, MoCo's key encoder) starts equal to the online."""
        for slow, fast in pairs:
            slow.assign(ops.copy(fast.value))  # own buffer (JAX donates state buffers)
            # Off the optimizer's list; the layers stay trainable, so the copy's batch norm
            # still uses batch statistics in training mode.
            slow.trainable = False

    def ema_update(self, pairs, decay):
        """slow ← decay·slow + (1 − decay)·fast for each (slow, fast) variable pair, after the
        optimizer step: BYOL's ξ ← τξ + (1 − τ)θ, MoCo's key ← m·key + (1 − m)·query. After a
        batch whose gradient the optimizer only accumulated (`gradient_accumulation_steps`,
        between its updates) the decay is 1: the copies move once per optimizer step."""
        moved = self.optimizer_moved()
        for slow, fast in pairs:
            d = ops.cast(decay, slow.dtype)
            if moved is not None:
                d = ops.where(moved, d, ops.ones_like(d))
            slow.assign(d * slow + (1.0 - d) * ops.cast(fast, slow.dtype))

    def optimizer_moved(self):
        """Whether the optimizer's last `apply` moved the weights (a bool tensor), or None
        when it moves them on every batch (no gradient accumulation)."""
        every = getattr(self.optimizer, "gradient_accumulation_steps", None)
        if not every:
            return None
        return ops.equal(compat.batches_trained(self.optimizer) % every, 0)

    # -------------------------------------------------------------- shared parts
    @property
    def seed_generator(self):
        """The in-step augmentation's random state (saved in checkpoints)."""
        return self.augmenter.seed_generator

    @property
    def metrics(self):
        return list(self._trackers.values())

    def call(self, images, training=False):
        """Images of any size (uint8 or float in [0, 1]) → online representation [B, D]."""
        return self._image_encoder(images, training=training)

    def image_encoder(self):
        """The online encoder behind this model's input contract, an `ImageEncoder` sharing
        the model's weights (what `train.py` saves as `encoder.keras` and exports)."""
        return self._image_encoder

    def encode(self, view, head):
        """Float view [B, H, W, 3] → (online representation h [B, D], head(h) in at least
        float32), both in training mode."""
        h = self.online_encoder(self.converter(view), training=True)
        return h, at_least_float32(head(h, training=True))

    def make_views(self, data):
        """`data` (see `byol_tf.inputs`) → (view1, view2, labels or None), float views in [0, 1]."""
        x, labels = inputs.checked_batch(data)
        if isinstance(x, tuple):
            return (*x, labels)
        if self.augment:
            return (*self.augmenter(x), labels)
        return x, x, labels

    def loss_and_logs(self, view1, view2, targets, labels=None):
        """The method's loss (+ the probe's cross-entropy on stop-gradient h of view 1 when
        labels are given) and the logs, "loss" the method's own."""
        loss, logs, h1 = self.compute_ssl_loss(view1, view2, targets)
        logs = {"loss": loss, **logs}
        if self.probe is not None and labels is not None and h1 is not None:
            logits = at_least_float32(self.probe(ops.stop_gradient(h1)))
            probe_loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
            loss = loss + probe_loss
            logs.update(probe_loss=probe_loss, probe_logits=logits, labels=labels)
        return loss, logs

    def update_metrics(self, logs, scalars, learning_rate):
        """Updates the metric trackers; returns their results (the step's logs)."""
        logs = {**logs, **scalars, "learning_rate": learning_rate}
        for name, tracker in self._trackers.items():
            if name == "probe_accuracy":
                if "probe_logits" in logs:
                    tracker.update_state(logs["labels"], logs["probe_logits"])
            elif name in logs:
                tracker.update_state(logs[name])
        return compat.reducible_step_results({m.name: m.result() for m in self.metrics})

    def step_variables(self, with_labels):
        """The variables the optimizer updates: without labels the probe gets no gradient."""
        variables = self.trainable_variables
        if self.probe is not None and not with_labels:
            probe = {id(v) for v in self.probe.trainable_variables}
            variables = [v for v in variables if id(v) not in probe]
        return variables

    def train_step(self, *args):
        return steps.for_backend().train_step(self, *args)

    def test_step(self, *args):
        return steps.for_backend().test_step(self, *args)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, bad input reported as a ValueError (`byol_tf.inputs`)."""
        with inputs.reported_as_value_errors(x):
            return super().fit(x, y, *args, **kwargs)

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "encoder": keras.saving.serialize_keras_object(self.online_encoder),
            "total_steps": self.total_steps, "num_classes": self.num_classes,
            "image_size": self.image_size, "augment": self.augment, "view1": self.view1,
            "view2": self.view2, "seed": self.seed, "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
