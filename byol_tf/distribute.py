"""Where a step runs under `tf.distribute`: replica index and count, gathers and means
across replicas. Every function is a no-op answer (one replica) outside a multi-replica
TensorFlow strategy and on other backends, so the models call them unconditionally."""

import keras


def _replica_context():
    """The TF replica context of a multi-replica step, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas():
    """Replicas of the current `tf.distribute` strategy (1 outside any, or not on TF)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return tf.distribute.get_strategy().num_replicas_in_sync
    return context.num_replicas_in_sync


def replica():
    """(replica index, replica count) inside a multi-replica step, else None."""
    context = _replica_context()
    if context is None:
        return None
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def gather_replicas(x):
    """`[B, ...]` on each replica → (`[N, ...]` all replicas' rows in replica order, the
    local rows' offset). Without several replicas: (x, 0). Differentiable."""
    context = _replica_context()
    if context is None:
        return x, 0
    import tensorflow as tf

    return context.all_gather(x, axis=0), context.replica_id_in_sync_group * tf.shape(x)[0]


def mean_over_replicas(*tensors):
    """The tensors' means over replicas (the tensors themselves with one replica)."""
    context = _replica_context()
    if context is None:
        return tensors
    import tensorflow as tf

    return tuple(context.all_reduce(tf.distribute.ReduceOp.MEAN, list(tensors)))


def multi_worker():
    """True under a `tf.distribute` strategy that spans several workers."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and
            len(strategy.extended.worker_devices) < strategy.num_replicas_in_sync)
