"""`TwoViewModel`: what every two-view self-supervised method shares (a `keras.Model`).

Input handling and checks, the two augmented views (drawn per sample inside the step, or
given), the online linear probe, metrics, and one train step for the TensorFlow backend
(GradientTape; any `tf.distribute` strategy) and the JAX backend (stateless, for `jax.jit`),
both running the same method code:

    view1, view2, labels = make_views(data)
    targets = self.targets(view1, view2)                # no gradient (EMA networks, keys)
    loss, logs, h1 = self.ssl_loss(view1, view2, targets)   # differentiable; h1 feeds the probe
    optimizer step on the trainable variables   # (TF, `separable_views()`: one view at a time)
    self.after_update(targets, scalars)                 # EMA targets, queues
    scalars = self.step_scalars(step)                   # e.g. τ, read before the step

A method subclasses it, builds its networks in `__init__` and implements `ssl_loss` (and,
if it has them, `targets`, `after_update`, `step_scalars`). `model(images)` returns the
online encoder's representation.
"""

import keras
from keras import layers, ops

from byol_tf import augment as augment_lib
from byol_tf import encoders as encoders_lib
from byol_tf import inputs
from byol_tf.image_encoder import ImageEncoder, static_image_size
from byol_tf.losses import l2_normalize
from byol_tf.preprocessing import ImageConverter, to_float_images


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


def replica():
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


def stateless(variables, values, fn, collect):
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


class TwoViewModel(keras.Model):
    """Base of BYOL, SimCLR, MoCo v2 and the multi-view objective.

    Args:
      encoder: a built `keras.Model` mapping normalised images `[B, H, W, 3]` to `[B, D]`,
        or a name from `byol_tf.encoders.PRESETS`.
      total_steps: int. K, the number of optimizer steps the method's schedules span.
        Defaults to 1000.
      num_classes: int or None. If set, an online linear probe on the stop-gradient
        representation of view 1 trains alongside when labels are given. Defaults to None.
      image_size: int or None. Side of the augmented views and of the model's
        `ImageConverter`; None: the encoder's static input side, else the input's own.
        Defaults to None.
      augment: bool. Draw the paper's two views inside the step; if False the images are
        used as both views (or the dataset supplies `(view1, view2)`). Defaults to True.
      view1: dict or None. First view's augmentation config (`byol_tf.augment`). Defaults
        to the paper's `VIEW1`.
      view2: dict or None. Second view's config. Defaults to the paper's `VIEW2`.
      seed: int or None. Seed of the in-step augmentation. Defaults to None.
    """

    metric_names = ()  # the method's extra logged scalars (from its logs or step_scalars)

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
        self.total_steps = int(total_steps)
        self.num_classes, self.image_size, self.augment = num_classes, image_size, augment
        self.view1, self.view2 = augment_lib.view_configs(view1, view2)
        self.seed = seed
        self.online_encoder = encoder
        self.converter = ImageConverter(image_size=image_size or static_image_size(encoder),
                                        name="converter")
        self.representation_dim = encoder.output_shape[-1]
        self.probe = None
        if num_classes:
            self.probe = layers.Dense(num_classes, name="probe")
            self.probe.build((None, self.representation_dim))
        self.seed_generator = keras.random.SeedGenerator(seed)
        names = ("loss", *self.metric_names, "learning_rate")
        self._trackers = {name: keras.metrics.Mean(name=name) for name in names}
        if num_classes:
            self._trackers["probe_loss"] = keras.metrics.Mean(name="probe_loss")
            self._trackers["probe_accuracy"] = keras.metrics.SparseCategoricalAccuracy(
                name="probe_accuracy")

    # ------------------------------------------------------------ method hooks
    def targets(self, view1, view2):
        """Tensors computed before the gradient and without one (e.g. EMA projections)."""
        return None

    def ssl_loss(self, view1, view2, targets):
        """(loss, logs, online representation of view 1); differentiable in the online
        weights. Subclasses implement it."""
        raise NotImplementedError

    def separable_views(self):
        """Whether the loss is a sum of one term per view, each computed from that view's
        online forward alone (BYOL's); then `view_loss` gives the terms and the TensorFlow
        step takes the views' gradients one after the other, holding one view's activations
        at a time instead of both (same gradients, less memory)."""
        return False

    def view_loss(self, index, view, targets):
        """(term of view `index` (0 or 1), its logs, that view's online representation h),
        for a model whose `separable_views()`; the loss is the terms' sum."""
        raise NotImplementedError

    def step_scalars(self, step):
        """Scalars of this step read before the optimizer moves (e.g. {"tau": τ_k})."""
        return {}

    def after_update(self, targets, scalars):
        """Updates after the optimizer step (EMA targets, queues)."""

    # -------------------------------------------------------------- shared parts
    @property
    def metrics(self):
        return list(self._trackers.values())

    def normalize(self, views):
        """Float [0, 1] views → encoder input (the model's `ImageConverter`)."""
        return self.converter(views)

    def call(self, images, training=False):
        """Images of any size (uint8 or float in [0, 1]) → online representation [B, D]."""
        return self.online_encoder(self.converter(images), training=training)

    def image_encoder(self):
        """The online encoder behind this model's input contract, as an `ImageEncoder`
        (what `train.py` saves as `encoder.keras` and exports)."""
        converter = ImageConverter.from_config(self.converter.get_config())
        return ImageEncoder(self.online_encoder, converter)

    def encode(self, view, head):
        """Float view [B, H, W, 3] → (online representation h [B, D], head(h) in at least
        float32), both in training mode."""
        h = self.online_encoder(self.normalize(view), training=True)
        return h, at_least_float32(head(h, training=True))

    def make_views(self, data):
        """`data` (see `byol_tf.inputs`) → (view1, view2, labels or None), float views in [0, 1]."""
        x, labels = inputs.split_batch(data)
        for what, tensor in inputs.image_tensors(x):
            inputs.check_image_spec(tensor, what)
        if isinstance(x, tuple):
            views = [to_float_images(v) for v in x]
        else:
            images = to_float_images(x)
            if self.augment:
                size = self.image_size or images.shape[1]
                views = [augment_lib.augment(images, cfg, size, self.seed_generator, replica())
                         for cfg in (self.view1, self.view2)]
            else:
                views = [images, images]
        return views[0], views[1], labels

    def loss_with_probe(self, view1, view2, targets, labels=None):
        """The method's loss (+ the probe's cross-entropy when labels are given) and logs."""
        loss, logs, h1 = self.ssl_loss(view1, view2, targets)
        return self.add_probe_loss(loss, logs, h1, labels)

    def add_probe_loss(self, loss, logs, h1, labels):
        """(loss + the probe's cross-entropy on stop-gradient h1 when labels are given, logs
        with "loss" the method's own loss)."""
        logs = {"loss": loss, **logs}
        if self.probe is not None and labels is not None:
            logits = at_least_float32(self.probe(ops.stop_gradient(h1)))
            probe_loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True))
            loss = loss + probe_loss
            logs.update(probe_loss=probe_loss, probe_logits=logits, labels=labels)
        return loss, logs

    def _record(self, logs, scalars, learning_rate):
        logs = {**logs, **scalars, "learning_rate": learning_rate}
        for name, tracker in self._trackers.items():
            if name == "probe_accuracy":
                if "probe_logits" in logs:
                    tracker.update_state(logs["labels"], logs["probe_logits"])
            elif name in logs:
                tracker.update_state(logs[name])
        results = {m.name: m.result() for m in self.metrics}
        if _multi_worker():
            # Keras reduces step outputs with strategy.reduce("MEAN", v, axis=0) under
            # MultiWorkerMirroredStrategy, which fails on scalars: give it a length-1 axis
            # (the reduce returns the scalar mean over all replicas).
            results = {k: ops.reshape(v, (1,)) for k, v in results.items()}
        return results

    def _step_variables(self, labels):
        """The variables the optimizer updates: without labels the probe gets no gradient."""
        variables = self.trainable_variables
        if self.probe is not None and labels is None:
            probe = {id(v) for v in self.probe.trainable_variables}
            variables = [v for v in variables if id(v) not in probe]
        return variables

    # ------------------------------------------------------------------ steps
    def train_step(self, *args):
        """One step. TF backend: `train_step(data)` with a GradientTape. JAX backend:
        `train_step(state, data)`, stateless (see `_jax_train_step`). Both run the same
        `make_views`, `targets`, `ssl_loss`, optimizer `apply`, `after_update` and metric code."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._tf_train_step(*args)
        if backend == "jax":
            return self._jax_train_step(*args)
        raise NotImplementedError(f"{type(self).__name__}.train_step supports the tensorflow and "
                                  f"jax backends; got {backend}")

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            state, data = args
            trainable, non_trainable, metric_values = state
            variables = self.trainable_variables + self.non_trainable_variables + self.metrics_variables
            logs, (non_trainable, metric_values) = stateless(
                variables, [*trainable, *non_trainable, *metric_values], lambda: self._test_logs(data),
                (self.non_trainable_variables, self.metrics_variables))
            return logs, (trainable, non_trainable, metric_values)
        return self._test_logs(*args)

    def _test_logs(self, data):
        view1, view2, labels = self.make_views(data)
        targets = self.targets(view1, view2)
        _, logs = self.loss_with_probe(view1, view2, targets, labels)
        return self._record(logs, self.step_scalars(self.optimizer.iterations),
                            self.optimizer.learning_rate)

    def _tf_train_step(self, data):
        import tensorflow as tf

        view1, view2, labels = self.make_views(data)
        if not self.jit_compile:
            inputs.assert_image_values(data)
        targets = self.targets(view1, view2)
        variables = self._step_variables(labels)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync

        def gradients(loss_fn):
            with tf.GradientTape() as tape:
                loss, logs = loss_fn()
                # Gradients are summed over replicas: average the loss over the global batch.
                scaled = self.optimizer.scale_loss(loss / replicas)  # (loss scaling: float16)
            return tape.gradient(scaled, variables), logs

        if not self.separable_views():
            grads, logs = gradients(lambda: self.loss_with_probe(view1, view2, targets, labels))
        else:  # view 1's forward and backward, then view 2's: one view's activations held
            grads, logs = gradients(lambda: self.add_probe_loss(
                *self.view_loss(0, view1, targets), labels))
            with tf.control_dependencies([g for g in grads if g is not None]):
                grads2, logs2 = gradients(lambda: self.add_probe_loss(
                    *self.view_loss(1, view2, targets), None))
            grads = [a if b is None else b if a is None else a + b
                     for a, b in zip(grads, grads2)]
            logs = {**logs, "loss": logs["loss"] + logs2["loss"]}
        scalars = self.step_scalars(self.optimizer.iterations)
        learning_rate = self.optimizer.learning_rate
        self.optimizer.apply(grads, variables)
        self.after_update(targets, scalars)
        return self._record(logs, scalars, learning_rate)

    def jax_state(self):
        """The `state` that `train_step(state, data)` takes on the JAX backend: the values of
        the (trainable, non-trainable, optimizer, metric) variables, the optimizer built."""
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        return tuple([v.value for v in group] for group in (
            self.trainable_variables, self.non_trainable_variables, self.optimizer.variables,
            self.metrics_variables))

    def _jax_train_step(self, state, data):
        """The same step as `_tf_train_step`, stateless for `jax.jit`: `state` holds the values
        of (trainable, non-trainable, optimizer, metric) variables; the model's own methods run
        inside `keras.StatelessScope`s that map its variables to those values and record their
        assignments (batch-norm statistics, the augmentation seed, the optimizer update, EMA
        targets and queues, the metrics); the step returns (logs, new state)."""
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
                targets = self.targets(view1, view2)
                loss, logs = self.loss_with_probe(view1, view2, targets, labels)
                return loss, (logs, targets)
            (loss, aux), (non_trainable,) = stateless(
                trainable_vars + non_trainable_vars, [*trainable, *non_trainable], forward,
                (non_trainable_vars,))
            return loss, (aux, non_trainable)

        (_, ((logs, targets), non_trainable)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(trainable, non_trainable)
        variables = self._step_variables(True if traced["labels"] else None)
        grads_by_id = {id(v): g for v, g in zip(trainable_vars, grads)}
        optimizer_vars, metric_vars = self.optimizer.variables, self.metrics_variables

        def update():
            scalars = self.step_scalars(self.optimizer.iterations)
            learning_rate = ops.convert_to_tensor(self.optimizer.learning_rate)
            self.optimizer.apply([grads_by_id[id(v)] for v in variables], variables)
            self.after_update(targets, scalars)
            return self._record(logs, scalars, learning_rate)

        return stateless(
            trainable_vars + non_trainable_vars + optimizer_vars + metric_vars,
            [*trainable, *non_trainable, *optimizer_values, *metric_values], update,
            (trainable_vars, non_trainable_vars, optimizer_vars, metric_vars))

    # ----------------------------------------------------------- input checks
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras' TF trainer builds a model under a strategy from a data batch it first
        MEAN-reduces across replicas; under MultiWorkerMirroredStrategy that reduce fails
        on tuple batches (`Attempt to convert a value (PerReplica...) to a Tensor`). These
        models build their layers in `__init__`, so only the optimizer is left to build."""
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with the first batch checked eagerly (shape, dtype,
        range, empty dataset) so bad input fails with a ValueError before training."""
        inputs.check_first_batch(x)
        try:
            return super().fit(x, y, *args, **kwargs)
        except Exception as error:  # surface in-graph input checks as ValueError
            message = inputs.in_graph_check_message(error)
            if message:
                raise ValueError(message) from None
            raise

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
