"""Every private TensorFlow and Keras API byol_tf uses, in one place.

Written against TensorFlow 2.21 and Keras 3.15 (`requirements.txt` pins both to one minor
version; nothing here imports either at module level). When either moves, this module and the two private hooks overridden by name are
what to check:
  - `keras.Model._maybe_symbolic_build` (`BuildsOptimizerOnly` below);
  - `keras.optimizers.Optimizer._apply_weight_decay` (`byol_tf.optimizers.AdamW`);
and Keras' private list of variables created unallocated (`deferred_variables` below), and
the optimizer's raw call counter (`batches_trained`, `batch_count` below).
"""

TENSORFLOW = "2.21"
KERAS = "3.15"


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def in_xla_context():
    """True while tracing a `jit_compile=True` function (TF backend)."""
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


# ------------------------------------------------------------------ optimizer internals
def batches_trained(optimizer):
    """The batches the optimizer was called on (`apply` calls): its public `iterations` with
    `gradient_accumulation_steps` counts optimizer steps (÷ N), this the batches (what a
    data stream's position and `fit`'s steps count); without accumulation, the same."""
    return optimizer._iterations


def batch_count(optimizer):
    """`batches_trained` as a Python int (for the trainer's and callbacks' bookkeeping)."""
    import keras

    return int(keras.ops.convert_to_numpy(optimizer._iterations))


def variable_index(optimizer, variable):
    """The index of `variable` in the optimizer's slot lists."""
    return optimizer._get_variable_index(variable)


def adam_slots(optimizer, index):
    """(first moment m, second moment v) of an Adam-family optimizer's variable `index`."""
    return optimizer._momentums[index], optimizer._velocities[index]


def uses_weight_decay(optimizer, variable):
    """Whether the optimizer decays `variable` (its `exclude_from_weight_decay` rules)."""
    return optimizer._use_weight_decay(variable)


def merge_call(fn, optimizer, *args):
    """`fn(distribution, *args)` in the cross-replica context of the optimizer's strategy
    (how Keras' TF optimizers update variables under `tf.distribute`)."""
    import tensorflow as tf

    return tf.__internal__.distribute.interim.maybe_merge_call(
        fn, optimizer._distribution_strategy, *args)


# ------------------------------------------------------------------ model internals
class BuildsOptimizerOnly:
    """Mixin for models that build their layers in `__init__`. Keras' TF trainer builds a
    model under a strategy from a data batch it first MEAN-reduces across replicas; under
    MultiWorkerMirroredStrategy that reduce fails on tuple batches (`Attempt to convert a
    value (PerReplica...) to a Tensor`). Only the optimizer is left to build."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


def reducible_step_results(results):
    """A train step's scalar results in the shape Keras can reduce: under
    MultiWorkerMirroredStrategy Keras reduces step outputs with `strategy.reduce("MEAN", v,
    axis=0)`, which fails on scalars, so they get a length-1 axis there (the reduce then
    returns the scalar mean over all replicas)."""
    from keras import ops

    from byol_tf.distribute import multi_worker

    if not multi_worker():
        return results
    return {k: ops.reshape(v, (1,)) for k, v in results.items()}


# ------------------------------------------------------------------ variable creation
def deferred_variables():
    """A context in which Keras variables created under `keras.StatelessScope(
    initialize_variables=False)` stay unallocated and are forgotten on exit: Keras keeps
    them in a private list that its next eager `StatelessScope` exit would allocate."""
    import contextlib

    from keras.src.backend.common import global_state

    @contextlib.contextmanager
    def scope():
        key = "uninitialized_variables"
        before = list(global_state.get_global_attribute(key, []) or [])
        try:
            yield
        finally:
            global_state.set_global_attribute(key, before)

    return scope()
