"""`byol_tf.BYOL`: Bootstrap Your Own Latent (Grill et al. 2020) as a `keras.Model`.

Online network: encoder → projector → predictor. Target network: its own encoder and
projector (no predictor), a copy of the online weights at construction, never given a
gradient; after every optimizer step its weights become τ·ξ + (1−τ)·θ with
τ = 1 − (1−τ_base)(cos(πk/K)+1)/2 and k the optimizer's step counter (so τ survives a
resume). Target batch-norm moving statistics are not averaged: like the official code,
the target keeps its own, updated by its own training-mode forward passes.
"""

import keras
import numpy as np
from keras import layers, ops

from byol_tf import augment as augment_lib
from byol_tf import encoders as encoders_lib
from byol_tf.encoders import BN_EPSILON, BN_MOMENTUM
from byol_tf.layers import BatchNorm
from byol_tf.schedules import target_decay

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CHECK_TAG = "byol_tf input check"


@keras.saving.register_keras_serializable(package="byol_tf")
class MLP(keras.Sequential):
    """`Dense(hidden) → BatchNorm → ReLU → Dense(out, no bias)`: `[B, D] → [B, out]`.
    Batch norm uses global-batch statistics under a multi-replica strategy when
    `sync_batch_norm`."""

    def __init__(self, hidden_dim, output_dim, input_dim=None, sync_batch_norm=True, name=None,
                 **kwargs):
        kwargs.pop("layers", None)
        super().__init__(name=name, **kwargs)
        self.hidden_dim, self.output_dim, self.input_dim = hidden_dim, output_dim, input_dim
        self.sync_batch_norm = sync_batch_norm
        if input_dim is not None:
            self.add(keras.Input((input_dim,)))
        self.add(layers.Dense(hidden_dim, name="hidden"))
        self.add(BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=sync_batch_norm,
                           name="bn"))
        self.add(layers.ReLU(name="relu"))
        self.add(layers.Dense(output_dim, use_bias=False, name="out"))

    def get_config(self):
        return {"hidden_dim": self.hidden_dim, "output_dim": self.output_dim,
                "input_dim": self.input_dim, "sync_batch_norm": self.sync_batch_norm,
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _replica():
    """(replica index, replica count) inside a multi-replica step (TF backend), else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def _multi_worker():
    """True under a tf.distribute strategy that spans several workers (TF backend)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
            len(strategy.extended.worker_devices) < strategy.num_replicas_in_sync)


def _stateless(variables, values, fn, collect):
    """Runs `fn()` with `variables` holding `values` (a `keras.StatelessScope`, for JAX).
    Returns fn's result and, for each list in `collect`, its variables' values after fn:
    assigned ones updated, the others as given."""
    given = {id(v): value for v, value in zip(variables, values)}
    with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
        result = fn()
    after = []
    for group in collect:
        current = [scope.get_current_value(v) for v in group]
        after.append([given[id(v)] if c is None else c for v, c in zip(group, current)])
    return result, tuple(after)


def _at_least_float32(x):
    """16-bit floats → float32; float32 and float64 unchanged."""
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        return ops.cast(x, "float32")
    return x


def l2_normalize(x, axis=-1, epsilon=1e-12):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


def regression_loss(prediction, target):
    """`2 − 2·cos(prediction, target)` per sample: `[B, P], [B, P] → [B]`."""
    return 2.0 - 2.0 * ops.sum(l2_normalize(prediction) * l2_normalize(target), axis=-1)


def projection_std(projection):
    """Collapse metric: mean over dimensions of the batch std of l2-normalised
    projections. ≈ 1/√d for a healthy representation, → 0 when it collapses."""
    z = l2_normalize(ops.cast(projection, "float32"))
    return ops.mean(ops.std(z, axis=0))


def check_image_spec(images, what="images"):
    """Static checks: rank 4, 3 channels, uint8 or float. Raises ValueError."""
    shape = tuple(images.shape)
    dtype = keras.backend.standardize_dtype(images.dtype)
    if len(shape) != 4:
        raise ValueError(f"{what} must have rank 4 [batch, height, width, 3]; got shape {shape}")
    if shape[-1] != 3:
        raise ValueError(f"{what} must have 3 channels (RGB); got shape {shape} "
                         f"with {shape[-1]} channels")
    if dtype != "uint8" and not dtype.startswith(("float", "bfloat")):
        raise ValueError(f"{what} must be uint8 in [0, 255] or float in [0, 1]; got dtype {dtype}")


def check_image_values(images, what="images"):
    """Eager value checks on a numpy-convertible batch: float must be finite, in [0, 1]."""
    check_image_spec(images, what)
    array = np.asarray(images)
    if array.dtype == np.uint8:
        return
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contain NaN or infinite values")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise ValueError(f"float {what} must be in [0, 1]; got values in "
                         f"[{array.min():.4g}, {array.max():.4g}] (uint8 images are scaled "
                         "automatically; divide floats in [0, 255] by 255)")


@keras.saving.register_keras_serializable(package="byol_tf")
class BYOL(keras.Model):
    """BYOL around any Keras encoder `images [B, H, W, 3] → representation [B, D]`.

    Args:
      encoder: a Keras model, or a name from `byol_tf.encoders.PRESETS`.
      projection_dim: output size of projector and predictor (256).
      hidden_dim: hidden size of projector and predictor MLPs (4096).
      tau_base: base EMA rate τ_base of the target network (0.996).
      total_steps: K, the number of optimizer steps the τ schedule spans.
      num_classes: if set, an online linear probe on the stop-gradient
        representation of view 1 is trained alongside when labels are given.
      image_size: side of the augmented views (default: the input's side).
      augment: draw the paper's two views inside `train_step`; if False the
        images are used as both views (or the dataset supplies `(view1, view2)`).
      view1, view2: augmentation configs (see `byol_tf.augment`).
      seed: seed of the in-step augmentation.
      sync_batch_norm: projector/predictor batch norm over the global batch under a
        multi-replica strategy (the encoder has its own switch).

    `model(images)` returns the online representation `[B, D]`.
    """

    def __init__(self, encoder, projection_dim=256, hidden_dim=4096, tau_base=0.996,
                 total_steps=1000, num_classes=None, image_size=None, augment=True,
                 view1=None, view2=None, seed=None, sync_batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, str):
            encoder = encoders_lib.get(encoder)
        if not isinstance(encoder, keras.Model) or not encoder.built:
            raise ValueError("encoder must be a built keras.Model mapping images [B, H, W, 3] to "
                             "[B, D]: give it a keras.Input or call encoder.build((None, H, W, 3))")
        if not 0.0 <= tau_base <= 1.0:
            raise ValueError(f"tau_base must be in [0, 1]; got {tau_base}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be ≥ 1; got {total_steps}")
        self.projection_dim, self.hidden_dim = projection_dim, hidden_dim
        self.tau_base, self.total_steps = float(tau_base), int(total_steps)
        self.num_classes, self.image_size, self.augment = num_classes, image_size, augment
        self.view1 = augment_lib.check_config(view1 or augment_lib.VIEW1)
        self.view2 = augment_lib.check_config(view2 or augment_lib.VIEW2)
        self.seed, self.sync_batch_norm = seed, sync_batch_norm

        self.online_encoder = encoder
        self.target_encoder = keras.models.clone_model(encoder)
        self.target_encoder.name = "target_" + encoder.name if not encoder.name.startswith(
            "target_") else encoder.name
        dim = encoder.output_shape[-1]
        self.representation_dim = dim
        self.online_projector = MLP(hidden_dim, projection_dim, dim, sync_batch_norm,
                                    name="online_projector")
        self.target_projector = MLP(hidden_dim, projection_dim, dim, sync_batch_norm,
                                    name="target_projector")
        self.online_predictor = MLP(hidden_dim, projection_dim, projection_dim, sync_batch_norm,
                                    name="online_predictor")
        self.probe = None
        if num_classes:
            self.probe = layers.Dense(num_classes, name="probe")
            self.probe.build((None, dim))
        for target, online in zip(self.target_encoder.weights + self.target_projector.weights,
                                  self.online_encoder.weights + self.online_projector.weights):
            target.assign(ops.copy(online.value))  # own buffer (JAX donates state buffers)
        for target, _ in self.target_pairs:
            # Off the optimizer's list, but the layers stay trainable so the target's
            # batch norm still uses batch statistics in training mode.
            target.trainable = False
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in (
            "loss", "projection_std", "tau", "learning_rate")}
        if num_classes:
            self._trackers["probe_loss"] = keras.metrics.Mean(name="probe_loss")
            self._trackers["probe_accuracy"] = keras.metrics.SparseCategoricalAccuracy(
                name="probe_accuracy")
        self.built = True

    # ----------------------------------------------------------------- structure
    @property
    def target_pairs(self):
        """[(target variable ξ, online variable θ)] for target encoder and projector."""
        targets = self.target_encoder.weights + self.target_projector.weights
        onlines = self.online_encoder.weights + self.online_projector.weights
        return [(t, o) for t, o in zip(targets, onlines) if o.trainable]

    @property
    def metrics(self):
        return list(self._trackers.values())

    def normalize(self, views):
        """Float [0, 1] views → ImageNet mean/std normalised encoder input."""
        mean, std = (ops.array(v, dtype=views.dtype) for v in (IMAGENET_MEAN, IMAGENET_STD))
        return (views - mean) / std

    def call(self, images, training=False):
        check_image_spec(images)
        images = augment_lib.to_float_images(images)
        return self.online_encoder(self.normalize(images), training=training)

    # -------------------------------------------------------------------- data
    def make_views(self, data):
        """`data` → (view1, view2, labels or None), float32 views in [0, 1].

        Accepts images, (images, labels), (view1, view2) and ((view1, view2), labels).
        """
        x, labels = data, None
        if isinstance(data, (tuple, list)):
            if len(data) == 2 and len(getattr(data[1], "shape", ())) == 4:
                x = tuple(data)  # (view1, view2)
            elif len(data) in (2, 3):
                x, labels = data[0], data[1]
            else:
                raise ValueError(f"Expected images, (images, labels), (view1, view2) or "
                                 f"((view1, view2), labels); got a tuple of {len(data)}")
        if isinstance(x, (tuple, list)):
            check_image_spec(x[0], "view1")
            check_image_spec(x[1], "view2")
            views = [augment_lib.to_float_images(v) for v in x]
        else:
            check_image_spec(x)
            images = augment_lib.to_float_images(x)
            if self.augment:
                size = self.image_size or images.shape[1]
                replica = _replica()
                views = [augment_lib.augment(images, cfg, size, self.seed_generator, replica)
                         for cfg in (self.view1, self.view2)]
            else:
                views = [images, images]
        if labels is not None and len(labels.shape) != 1:
            raise ValueError(f"labels must be integer class ids of shape [batch]; "
                             f"got shape {tuple(labels.shape)}")
        return views[0], views[1], labels

    # -------------------------------------------------------------------- losses
    def target_projections(self, view1, view2):
        """Target projections z'(v1), z'(v2), each view its own batch (training-mode BN)."""
        outs = []
        for view in (view1, view2):
            h = self.target_encoder(self.normalize(view), training=True)
            outs.append(ops.stop_gradient(self.target_projector(h, training=True)))
        return outs

    def online_loss(self, view1, view2, target1, target2, labels=None):
        """BYOL loss (+ probe loss when labels are given) and logs; differentiable in θ.

        loss = mean 2−2cos(q(z(v1)), z'(v2)) + mean 2−2cos(q(z(v2)), z'(v1)).
        """
        outs = []
        for view in (view1, view2):
            h = self.online_encoder(self.normalize(view), training=True)
            z = self.online_projector(h, training=True)
            outs.append((h, z, self.online_predictor(z, training=True)))
        (h1, z1, q1), (_, _, q2) = outs
        f32 = _at_least_float32  # the loss in float32 (or float64) under mixed precision
        byol_loss = (ops.mean(regression_loss(f32(q1), f32(target2))) +
                     ops.mean(regression_loss(f32(q2), f32(target1))))
        logs = {"loss": byol_loss, "projection_std": projection_std(z1)}
        total = byol_loss
        if self.probe is not None and labels is not None:
            logits = _at_least_float32(self.probe(ops.stop_gradient(h1)))
            probe_loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
            total = total + probe_loss
            logs.update(probe_loss=probe_loss, probe_logits=logits, labels=labels)
        return total, logs

    def tau(self, step):
        return target_decay(step, self.tau_base, self.total_steps)

    def update_target(self, tau):
        """ξ ← τ·ξ + (1 − τ)·θ for every target encoder/projector weight."""
        for target, online in self.target_pairs:
            t = ops.cast(tau, target.dtype)
            target.assign(t * target + (1.0 - t) * ops.cast(online, target.dtype))

    def _record(self, logs, tau, learning_rate):
        for name, tracker in self._trackers.items():
            if name == "probe_accuracy":
                if "probe_logits" in logs:
                    tracker.update_state(logs["labels"], logs["probe_logits"])
            elif name == "tau":
                tracker.update_state(tau)
            elif name == "learning_rate":
                tracker.update_state(learning_rate)
            elif name in logs:
                tracker.update_state(logs[name])
        results = {m.name: m.result() for m in self.metrics}
        if _multi_worker():
            # Keras reduces step outputs with strategy.reduce("MEAN", v, axis=0) under
            # MultiWorkerMirroredStrategy, which fails on scalars: give it a length-1 axis
            # (the reduce returns the scalar mean over all replicas).
            results = {k: ops.reshape(v, (1,)) for k, v in results.items()}
        return results

    # -------------------------------------------------------------------- steps
    def train_step(self, *args):
        """One BYOL step. TF backend: `train_step(data)` with a GradientTape. JAX backend:
        `train_step(state, data)`, stateless (see `_jax_train_step`). Both run the same
        `make_views`, `target_projections`, `online_loss`, optimizer `apply`, `update_target`
        and metric code."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._tf_train_step(*args)
        if backend == "jax":
            return self._jax_train_step(*args)
        raise NotImplementedError(f"BYOL.train_step supports the tensorflow and jax backends; "
                                  f"got {backend}")

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            state, data = args
            trainable, non_trainable, metric_values = state
            variables = self.trainable_variables + self.non_trainable_variables + self.metrics_variables
            logs, (non_trainable, metric_values) = _stateless(
                variables, [*trainable, *non_trainable, *metric_values], lambda: self._test_logs(data),
                (self.non_trainable_variables, self.metrics_variables))
            return logs, (trainable, non_trainable, metric_values)
        return self._test_logs(*args)

    def _test_logs(self, data):
        view1, view2, labels = self.make_views(data)
        target1, target2 = self.target_projections(view1, view2)
        _, logs = self.online_loss(view1, view2, target1, target2, labels)
        return self._record(logs, self.tau(self.optimizer.iterations),
                            self.optimizer.learning_rate)

    def _step_variables(self, labels):
        """The variables the optimizer updates: without labels the probe gets no gradient."""
        variables = self.trainable_variables
        if self.probe is not None and labels is None:
            probe = {id(v) for v in self.probe.trainable_variables}
            variables = [v for v in variables if id(v) not in probe]
        return variables

    def _tf_train_step(self, data):
        import tensorflow as tf

        view1, view2, labels = self.make_views(data)
        if not self.jit_compile:
            self._assert_values(data)
        target1, target2 = self.target_projections(view1, view2)
        variables = self._step_variables(labels)
        with tf.GradientTape() as tape:
            loss, logs = self.online_loss(view1, view2, target1, target2, labels)
            # Gradients are summed over replicas: average the loss over the global batch.
            scaled = loss / tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(scaled)  # loss scaling under mixed_float16
        grads = tape.gradient(scaled, variables)
        tau = self.tau(self.optimizer.iterations)
        learning_rate = self.optimizer.learning_rate
        self.optimizer.apply(grads, variables)
        self.update_target(tau)
        return self._record(logs, tau, learning_rate)

    def _jax_train_step(self, state, data):
        """The same step as `_tf_train_step`, stateless for `jax.jit`: `state` holds the values
        of (trainable, non-trainable, optimizer, metric) variables; the model's own methods run
        inside `keras.StatelessScope`s that map its variables to those values and record their
        assignments (batch-norm statistics, the augmentation seed, the optimizer update, the EMA
        target, the metrics); the step returns (logs, new state)."""
        import jax

        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            raise NotImplementedError("loss scaling (mixed_float16) is not implemented in the JAX "
                                      "step; use mixed_bfloat16")
        trainable, non_trainable, optimizer_values, metric_values = state
        trainable_vars, non_trainable_vars = self.trainable_variables, self.non_trainable_variables
        traced = {}

        def loss_fn(trainable, non_trainable):
            def forward():
                view1, view2, labels = self.make_views(data)
                traced["labels"] = labels is not None  # static: decided by the data's structure
                target1, target2 = self.target_projections(view1, view2)
                return self.online_loss(view1, view2, target1, target2, labels)
            (loss, logs), (non_trainable,) = _stateless(
                trainable_vars + non_trainable_vars, [*trainable, *non_trainable], forward,
                (non_trainable_vars,))
            return loss, (logs, non_trainable)

        (_, (logs, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            trainable, non_trainable)
        variables = self._step_variables(True if traced["labels"] else None)
        grads_by_id = {id(v): g for v, g in zip(trainable_vars, grads)}
        optimizer_vars, metric_vars = self.optimizer.variables, self.metrics_variables

        def update():
            tau = self.tau(self.optimizer.iterations)
            learning_rate = ops.convert_to_tensor(self.optimizer.learning_rate)
            self.optimizer.apply([grads_by_id[id(v)] for v in variables], variables)
            self.update_target(tau)
            return self._record(logs, tau, learning_rate)

        logs, new_state = _stateless(
            trainable_vars + non_trainable_vars + optimizer_vars + metric_vars,
            [*trainable, *non_trainable, *optimizer_values, *metric_values], update,
            (trainable_vars, non_trainable_vars, optimizer_vars, metric_vars))
        return logs, new_state

    def _assert_values(self, data):
        """In-graph value checks (TF backend, not under XLA)."""
        import tensorflow as tf

        flat = [t for t in keras.tree.flatten(data) if t is not None and len(t.shape) == 4]
        for t in flat:
            if t.dtype.is_floating:
                t32 = tf.cast(t, tf.float32)
                tf.debugging.assert_all_finite(t32, f"{_CHECK_TAG}: images contain NaN or Inf")
                tf.debugging.Assert(
                    tf.logical_and(tf.reduce_min(t32) >= 0.0, tf.reduce_max(t32) <= 1.0),
                    [f"{_CHECK_TAG}: float images must be in [0, 1]; min/max:",
                     tf.reduce_min(t32), tf.reduce_max(t32)])

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' TF trainer builds a model under a strategy from a data batch it first
        MEAN-reduces across replicas; under MultiWorkerMirroredStrategy that reduce fails
        on tuple batches (`Attempt to convert a value (PerReplica...) to a Tensor`). BYOL
        builds its layers in `__init__`, so only the optimizer is left to build."""
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with the first batch checked eagerly (shape, dtype,
        range, empty dataset) so bad input fails with a ValueError before training."""
        self._check_first_batch(x)
        try:
            return super().fit(x, y, *args, **kwargs)
        except Exception as error:  # surface in-graph input checks as ValueError
            if _CHECK_TAG in str(error):
                message = str(error).split(_CHECK_TAG + ": ", 1)[1].split("\n")[0]
                raise ValueError(message) from None
            raise

    def _check_first_batch(self, x):
        try:
            import tensorflow as tf
            is_dataset = isinstance(x, tf.data.Dataset)
        except ImportError:  # JAX-only installs (e.g. the GPU machine)
            is_dataset = False
        if is_dataset:
            batch = next(iter(x.take(1)), None)
            if batch is None:
                raise ValueError("The training dataset is empty: it yielded no batch")
        elif x is None:
            return
        else:
            batch = x
            if len(x) == 0:
                raise ValueError("The training data is empty")
        x0 = batch[0] if isinstance(batch, (tuple, list)) else batch
        views = x0 if isinstance(x0, (tuple, list)) else [x0]
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and \
                len(getattr(batch[1], "shape", ())) == 4:
            views = list(batch)
        for v in views:
            check_image_values(v)

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "encoder": keras.saving.serialize_keras_object(self.online_encoder),
            "projection_dim": self.projection_dim, "hidden_dim": self.hidden_dim,
            "tau_base": self.tau_base, "total_steps": self.total_steps,
            "num_classes": self.num_classes, "image_size": self.image_size,
            "augment": self.augment, "view1": self.view1, "view2": self.view2,
            "seed": self.seed, "sync_batch_norm": self.sync_batch_norm, "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
