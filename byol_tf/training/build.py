"""The model, optimizer and `tf.distribute` strategy of a run config."""

import contextlib

import keras
from absl import logging

import byol_tf
from byol_tf.byol import BYOL
from byol_tf.moco import MoCo
from byol_tf.multiview import MultiView
from byol_tf.simclr import SimCLR
from byol_tf.training.config import ConfigError

METHODS = {"byol": BYOL, "simclr": SimCLR, "moco": MoCo, "multiview": MultiView}


def build_method(config, encoder, num_classes, total_steps):
    """The method `config.method` around `encoder`: projection and hidden sizes (and BYOL's
    tau_base) from the `RunConfig`, then its `method_options`."""
    name = config.method
    if name not in METHODS:
        raise ConfigError(f"--method={name}: unknown; known: {', '.join(METHODS)}")
    kwargs = dict(projection_dim=config.projection_dim, hidden_dim=config.hidden_dim,
                  total_steps=total_steps, num_classes=num_classes,
                  image_size=config.image_size, seed=config.seed)
    if name == "byol":
        kwargs["tau_base"] = config.tau_base
    kwargs.update(config.method_options or {})
    try:
        return METHODS[name](encoder, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--method_options for {name}: {e}") from None


def build_model(config, num_classes):
    """The compiled model of a `RunConfig`."""
    keras.utils.set_random_seed(config.seed)
    try:
        encoder = byol_tf.encoders.get(config.encoder)
    except ValueError as e:
        raise ConfigError(f"--encoder: {e}") from None
    model = build_method(config, encoder, num_classes, config.total_steps)
    schedule = byol_tf.WarmupCosine(config.base_lr, config.batch_size, config.total_steps,
                                    config.warmup_steps)
    optimizer = byol_tf.optimizers.get(config.optimizer, schedule, config.weight_decay,
                                       config.accumulation_steps)
    model.compile(optimizer=optimizer, jit_compile=config.jit_compile)
    return model


class Strategy:
    """The run's `tf.distribute` strategy by name ("default", "mirrored", "multi_worker",
    "tpu"), and whether this process is the chief (the one that writes). On the JAX backend
    only "default" exists (one process, its devices as JAX sees them)."""

    def __init__(self, name="default", tpu=None):
        self.name, self.tf_strategy, self.is_chief = name, None, True
        if keras.backend.backend() != "tensorflow":
            if name != "default":
                raise ConfigError(f"--strategy={name} needs the tensorflow backend")
            return
        import tensorflow as tf

        if name == "default":
            self.tf_strategy = tf.distribute.get_strategy()
        elif name == "mirrored":
            self.tf_strategy = tf.distribute.MirroredStrategy()
        elif name == "tpu":
            try:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
                tf.config.experimental_connect_to_cluster(resolver)
                tf.tpu.experimental.initialize_tpu_system(resolver)
            except (ValueError, RuntimeError, tf.errors.OpError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise ConfigError(f"--strategy=tpu: no TPU found{f' at --tpu={tpu}' if tpu else ''}"
                                  f" ({first[:200]})") from None
            self.tf_strategy = tf.distribute.TPUStrategy(resolver)
        elif name == "multi_worker":
            self.tf_strategy = tf.distribute.MultiWorkerMirroredStrategy()
            resolver = self.tf_strategy.cluster_resolver
            chief_exists = "chief" in resolver.cluster_spec().as_dict()
            self.is_chief = (resolver.task_type in (None, "chief") or (
                resolver.task_type == "worker" and resolver.task_id == 0 and not chief_exists))
        else:
            raise ConfigError(f"--strategy={name}: unknown")

    @property
    def replicas(self):
        return self.tf_strategy.num_replicas_in_sync if self.tf_strategy else 1

    def scope(self):
        return self.tf_strategy.scope() if self.tf_strategy else contextlib.nullcontext()

    def finish_together(self):
        """Multi-worker: returns once every worker has called it (an all-reduce of ones), so
        that no worker exits while the chief still works: TensorFlow's coordination service
        leaves a worker that exited first hanging at exit when the chief leaves. A worker
        whose peer left as soon as its own copy of the sum was complete sees the connection
        closed: that too means every worker got here."""
        if self.name != "multi_worker":
            return
        import tensorflow as tf

        strategy = self.tf_strategy
        try:
            strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
        except tf.errors.UnavailableError as error:
            logging.info("finish_together: a worker left first (%s)", str(error)[:200])


def warn_if_bfloat16_is_emulated(precision, strategy):
    """mixed_bfloat16 on a CPU without native bfloat16 (AVX512-BF16 or AMX) is emulated:
    say so before training, with the host's CPU."""
    if precision != "mixed_bfloat16" or keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    from byol_tf.records import host

    if tf.config.list_logical_devices("GPU") or strategy.name == "tpu":
        return
    cpu = host()
    if not {"avx512_bf16", "amx_bf16"} & set(cpu["isa"]):
        logging.warning(
            "--precision=mixed_bfloat16 on %s (%s) without native bfloat16 (AVX512-BF16 or "
            "AMX): every bfloat16 convolution is emulated and the step is several times slower "
            "than float32 on such CPUs; use --precision=float32 here (bfloat16 pays off on "
            "TPUs, recent GPUs and CPUs with AVX512-BF16/AMX).", cpu["cpu"],
            ", ".join(cpu["isa"]) or "no AVX2")
