"""Run in a fresh process per Keras backend: 3 BYOL steps on pre-made real views.

    KERAS_BACKEND=tensorflow python tests/helpers/backend_step.py INPUT.npz OUT.npz
    KERAS_BACKEND=jax        python tests/helpers/backend_step.py INPUT.npz OUT.npz [float64]

(float64 needs JAX_ENABLE_X64=1 under JAX.)

INPUT.npz holds view1, view2 [3·B, 32, 32, 3] float32, labels [3·B] and, optionally, the
initial weights `w/<index>:<variable path>`; without them the model's own initial weights are used
and written to OUT.npz as `init/<index>:<path>` so the other backend can start from them.
OUT.npz: per-step `losses`, `probe_losses`, and the final `w/<index>:<path>` of every variable
(online and target weights, batch-norm statistics, probe) and `opt/<path>` of the optimizer.
"""

import os
import sys

import numpy as np

import keras  # noqa: E402  (KERAS_BACKEND comes from the environment)

import byol_tf  # noqa: E402

BATCH, STEPS = 16, 3


def main(inputs_path, out_path, dtype="float32"):
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    inputs = {k: (v.astype(dtype) if v.dtype.kind == "f" else v)
              for k, v in np.load(inputs_path).items()}
    keras.utils.set_random_seed(0)
    model = byol_tf.BYOL("tiny_resnet_cifar", projection_dim=16, hidden_dim=32, tau_base=0.9,
                         total_steps=STEPS, num_classes=10)
    schedule = byol_tf.WarmupCosine(0.8, BATCH, total_steps=STEPS, warmup_steps=1)
    model.compile(optimizer=byol_tf.LARS(schedule, weight_decay=1e-4),
                  jit_compile=keras.backend.backend() == "jax")
    model.optimizer.build(model.trainable_variables)
    out = {}
    given = {k[2:]: v for k, v in inputs.items() if k.startswith("w/")}
    # Online and target networks share layer names: key by position and path.
    keys = [f"{i:03d}:{v.path}" for i, v in enumerate(model.variables)]
    if given:
        assert set(given) == set(keys), sorted(set(given) ^ set(keys))[:10]
        for key, v in zip(keys, model.variables):
            v.assign(given[key])
    else:
        out.update({f"init/{k}": np.asarray(v.numpy()) for k, v in zip(keys, model.variables)})
    losses, probe_losses = [], []
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        logs = model.train_on_batch((inputs["view1"][batch], inputs["view2"][batch]),
                                    inputs["labels"][batch], return_dict=True)
        losses.append(float(logs["loss"]))
        probe_losses.append(float(logs["probe_loss"]))
    out.update({f"w/{k}": np.asarray(v.numpy()) for k, v in zip(keys, model.variables)})
    out.update({f"opt/{i:03d}:{v.path}": np.asarray(v.numpy())
                for i, v in enumerate(model.optimizer.variables)})
    np.savez(out_path, losses=np.array(losses), probe_losses=np.array(probe_losses),
             backend=keras.backend.backend(), **out)


if __name__ == "__main__":
    assert os.environ.get("KERAS_BACKEND") in ("tensorflow", "jax")
    main(*sys.argv[1:4])
