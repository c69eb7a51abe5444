"""Run in a fresh process: 3 BYOL steps on one device and under MirroredStrategy over 2
logical CPUs, same initial weights and global batches; writes the weights to an .npz.

    python tests/helpers/mirrored_run.py OUT.npz [--sync_bn=1] [--jit=0] [--method=byol]
        [--optimizer=lars]

--float64: weights, data and computations in float64.
--method: byol, byol_beta (β-InfoNCE, negatives gathered across replicas), simclr
(NT-Xent over the global batch), moco (keys of every replica enqueued), multiview.
--optimizer: lars, or adamw (byol_tf.optimizers.AdamW: TensorFlow's fused Adam kernel).
"""

import sys

import numpy as np

import byol_tf_runtime

byol_tf_runtime.use_onednn()  # before TensorFlow loads, as the commands do

import byol_tf  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

GLOBAL_BATCH, STEPS = 16, 3


def build(sync, method="byol", optimizer="lars"):
    keras.utils.set_random_seed(0)
    encoder = byol_tf.encoders.ResNet(depth=10, stem="cifar", base_width=8, sync_batch_norm=sync)
    common = dict(projection_dim=16, hidden_dim=32, total_steps=10, augment=False, num_classes=10)
    if method in ("byol", "byol_beta"):
        model = byol_tf.BYOL(encoder, sync_batch_norm=sync, beta=0.5 if method == "byol_beta" else 0.0,
                             **common)
    elif method == "simclr":
        model = byol_tf.SimCLR(encoder, sync_batch_norm=sync, temperature=0.5, **common)
    elif method == "moco":
        model = byol_tf.MoCo(encoder, queue_size=64, momentum=0.9, **common)
    else:
        model = byol_tf.MultiView(encoder, sync_batch_norm=sync, **common)
    model.compile(optimizer=byol_tf.LARS(0.5, weight_decay=1e-4) if optimizer == "lars" else
                  byol_tf.optimizers.AdamW(1e-2, weight_decay=1e-2))
    return model


def views():
    rng = np.random.default_rng(1)
    v1 = rng.uniform(size=(GLOBAL_BATCH * STEPS, 16, 16, 3)).astype(keras.config.floatx())
    v2 = rng.uniform(size=(GLOBAL_BATCH * STEPS, 16, 16, 3)).astype(keras.config.floatx())
    labels = rng.integers(0, 10, GLOBAL_BATCH * STEPS)
    return tf.data.Dataset.from_tensor_slices(((v1, v2), labels)).batch(GLOBAL_BATCH, drop_remainder=True)


def weights(model):
    out = {}
    for i, v in enumerate(model.weights):  # online and target layers share names: key by position
        values = getattr(v.value, "values", None)  # MirroredVariable: one copy a replica
        copies = [np.asarray(c) for c in values] if values else [np.asarray(v.numpy())]
        path = v.path.replace(model.name + "/", "model/", 1)  # the second model's name is uniquified
        out[f"{i:03d}:{path}"] = np.stack(copies)
    return out


def main(out, sync=True, method="byol", optimizer="lars"):
    single = build(sync, method, optimizer)
    single_logs = single.fit(views(), verbose=0).history
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = build(sync, method, optimizer)
    mirrored_logs = mirrored.fit(views(), verbose=0).history
    assert strategy.num_replicas_in_sync == 2
    np.savez(out, **{f"single::{k}": v for k, v in weights(single).items()},
             **{f"mirrored::{k}": v for k, v in weights(mirrored).items()},
             single_loss=single_logs["loss"][0], mirrored_loss=mirrored_logs["loss"][0],
             single_steps=int(single.optimizer.iterations.numpy()),
             mirrored_steps=int(mirrored.optimizer.iterations.numpy()))


if __name__ == "__main__":
    if "--float64" in sys.argv:  # rounding out of the way: isolates the distributed semantics
        keras.config.set_floatx("float64")
        keras.config.set_dtype_policy("float64")
    def option(name, default):
        return next((a.split("=", 1)[1] for a in sys.argv if a.startswith(f"--{name}=")), default)

    main(sys.argv[1], sync="--sync_bn=0" not in sys.argv, method=option("method", "byol"),
         optimizer=option("optimizer", "lars"))
