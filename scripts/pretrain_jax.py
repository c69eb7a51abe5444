"""BYOL pretraining on in-memory arrays with the JAX backend (GPU machines without TensorFlow).

    KERAS_BACKEND=jax python scripts/pretrain_jax.py --data=/tmp/cifar10.npz --run_dir=/tmp/run \
        --preset=cifar10 --epochs=200 --time_limit=540
    # again with the same flags until it prints "finished"; then, on a TensorFlow machine:
    python scripts/pretrain_jax.py --finalize --run_dir=runs/<run> --data_dir=<tfds dir>  # → encoder.keras

The step is `BYOL.train_step` on the JAX backend (the same code as the TensorFlow step),
`jax.jit`-compiled with the state donated; the whole training set lives on the device and
each step gathers its batch there. The recipe comes from `byol_tf/presets.py` (flags
override it). Every epoch ends with a checkpoint when `--time_limit` seconds have passed
(or every `--checkpoint_every` epochs): `checkpoint.npz` holds every model, optimizer and
metric variable and the augmentation RNG; the data order is a function of (seed, epoch),
so a resumed run equals an uninterrupted one. Writes config.json, metrics.json (per-epoch
loss, seconds, kNN), weights.npz (every model variable) and, on finishing, kNN top-1 on the
test set. No TensorFlow or h5py is needed on the training machine; `--finalize` (TF backend)
turns weights.npz into encoder.keras (checked against embeddings the JAX run recorded) so that `byol_tf.zoo.publish` and the
SavedModel export work as for a `train.py` run.
"""

import argparse
import hashlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="npz with x_train, y_train, x_test, y_test (uint8 NHWC); "
                                  "'sample' = the bundled CIFAR-10 sample")
    p.add_argument("--dataset_name", default="cifar10", help="recorded in config.json (zoo cards)")
    p.add_argument("--run_dir", required=True)
    p.add_argument("--preset", default="cifar10")
    for name, kind in (("encoder", str), ("epochs", int), ("batch_size", int), ("base_lr", float),
                       ("weight_decay", float), ("tau_base", float), ("warmup_epochs", int),
                       ("hidden_dim", int), ("projection_dim", int), ("optimizer", str)):
        p.add_argument(f"--{name}", type=kind)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="byol", choices=["byol", "simclr", "moco", "multiview"])
    p.add_argument("--method_options", default="{}", help="JSON object (see train.py)")
    p.add_argument("--precision", default="mixed_bfloat16", choices=["float32", "mixed_bfloat16"])
    p.add_argument("--time_limit", type=float, default=0, help="seconds; 0 = no limit")
    p.add_argument("--checkpoint_every", type=int, default=10, help="epochs")
    p.add_argument("--knn_every", type=int, default=0, help="epochs; 0 = at the end only")
    p.add_argument("--finalize", action="store_true", help="TF backend: weights.npz → .keras files")
    p.add_argument("--data_dir", help="--finalize: TFDS data_dir recorded for zoo.publish")
    return p.parse_args(argv)


def _config(args):
    from byol_tf import presets

    config = presets.for_dataset(args.preset)
    for key in list(config):
        if getattr(args, key, None) is not None:
            config[key] = getattr(args, key)
    config.update(method=args.method, method_options=json.loads(args.method_options))
    config.update(seed=args.seed, precision=args.precision, dataset=args.dataset_name,
                  data=args.data, data_dir=None, preset=args.preset, jit_compile=True)
    return config


def _versions():
    import jax
    import keras

    out = dict(python=sys.version.split()[0], platform=platform.platform(), jax=jax.__version__,
               keras=keras.__version__, numpy=np.__version__, keras_backend=keras.backend.backend(),
               device=str(jax.devices()[0].device_kind))
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                                           capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def _write(path, text_or_arrays):
    """Atomic write of JSON text or an npz of arrays."""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(text_or_arrays, dict):
        with open(tmp, "wb") as f:
            np.savez(f, **text_or_arrays)
    else:
        tmp.write_text(text_or_arrays)
    os.replace(tmp, path)


def _load_data(spec):
    if spec == "sample":
        from byol_tf import data
        arrays = data.load_sample()
    else:
        with np.load(spec) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    for key in ("x_train", "x_test"):
        x = arrays[key]
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"{key} must be uint8 [N, H, W, 3]; got {x.dtype} {x.shape}")
        if len(x) == 0:
            raise ValueError(f"{key} is empty")
    return arrays


def build(config, num_classes, steps_per_epoch):
    import keras

    import byol_tf

    from byol_tf import methods

    keras.utils.set_random_seed(config["seed"])
    total = config["epochs"] * steps_per_epoch
    model = methods.build(config, byol_tf.encoders.get(config["encoder"]), num_classes, total)
    schedule = byol_tf.WarmupCosine(config["base_lr"], config["batch_size"], total,
                                    min(config["warmup_epochs"] * steps_per_epoch, total - 1))
    model.compile(optimizer=byol_tf.optimizers.get(config["optimizer"], schedule,
                                                   config["weight_decay"]))
    model.optimizer.build(model.trainable_variables)
    return model


GROUPS = ("trainable_variables", "non_trainable_variables", "optimizer", "metrics_variables")


def _group(model, name):
    return model.optimizer.variables if name == "optimizer" else getattr(model, name)


def pretrain(args):
    import jax
    import jax.numpy as jnp
    import keras

    from byol_tf import evaluation, runs

    if keras.backend.backend() != "jax":
        raise SystemExit("pretraining here runs on the JAX backend: set KERAS_BACKEND=jax")
    run_dir = pathlib.Path(args.run_dir)
    config = _config(args)
    run = runs.RunFolder(run_dir)
    try:
        run.start(config, sys.argv, _versions())
    except ValueError as error:
        raise SystemExit(str(error)) from None
    config_path = run.config_path
    if (run_dir / "weights.npz").exists():
        print(f"finished: {run_dir} already holds the final weights")
        return
    keras.mixed_precision.set_global_policy(config["precision"])
    arrays = _load_data(config["data"])
    batch = config["batch_size"]
    steps_per_epoch = len(arrays["x_train"]) // batch
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {batch} exceeds the {len(arrays['x_train'])} training images")
    num_classes = int(arrays["y_train"].max()) + 1
    record = json.loads(config_path.read_text())
    record["derived"] = dict(steps_per_epoch=steps_per_epoch, num_classes=num_classes,
                             total_steps=config["epochs"] * steps_per_epoch)
    _write(config_path, json.dumps(record, indent=2))
    model = build(config, num_classes, steps_per_epoch)
    state = model.jax_state()
    fresh_metrics = [jnp.array(v) for v in state[3]]
    metrics_path = run_dir / "metrics.json"
    history = json.loads(metrics_path.read_text()) if metrics_path.exists() else dict(epochs=[])
    checkpoint = run_dir / "checkpoint.npz"
    epoch = 0
    if checkpoint.exists():
        with np.load(checkpoint) as f:
            state = tuple([jnp.asarray(f[f"{g}/{i}"]) for i in range(len(state[k]))]
                          for k, g in enumerate(GROUPS))
            epoch = int(f["epoch"])
        history["epochs"] = history["epochs"][:epoch]
        print(f"resumed at epoch {epoch}")
    x_train = jax.device_put(arrays["x_train"])
    y_train = jax.device_put(arrays["y_train"].astype(np.int32))
    step = jax.jit(model.train_step, donate_argnums=0)
    take = jax.jit(lambda x, y, idx: (jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)))
    start = time.time()

    def save(epoch_done):
        arrays_out = {f"{g}/{i}": np.asarray(v) for k, g in enumerate(GROUPS)
                      for i, v in enumerate(state[k])}
        _write(checkpoint, dict(arrays_out, epoch=np.array(epoch_done)))
        _write(metrics_path, json.dumps(history, indent=2))

    while epoch < config["epochs"]:
        t0 = time.time()
        order = np.random.default_rng([config["seed"], epoch]).permutation(len(arrays["x_train"]))
        state = (*state[:3], [jnp.array(v) for v in fresh_metrics])
        for s in range(steps_per_epoch):
            logs, state = step(state, take(x_train, y_train, order[s * batch:(s + 1) * batch]))
        logs = {k: float(v) for k, v in logs.items()}
        epoch += 1
        record = dict(epoch=epoch, seconds=round(time.time() - t0, 2), **logs)
        if args.knn_every and epoch % args.knn_every == 0 and epoch < config["epochs"]:
            _load_state(model, state)
            record["knn_top1"] = _knn(model, arrays, evaluation)
        history["epochs"].append(record)
        print(json.dumps(record), flush=True)
        out_of_time = args.time_limit and time.time() - start > args.time_limit
        if epoch < config["epochs"] and (out_of_time or epoch % args.checkpoint_every == 0):
            save(epoch)
            if out_of_time:
                print(f"stopped after epoch {epoch} (time limit); run again to resume")
                return
    _load_state(model, state)
    history["knn_top1"] = _knn(model, arrays, evaluation)
    history["seconds_per_epoch"] = float(np.median([e["seconds"] for e in history["epochs"]]))
    keys = [f"{i:04d}:{v.path}" for i, v in enumerate(model.variables)]
    _write(run_dir / "weights.npz", {k: np.asarray(v.numpy()) for k, v in zip(keys, model.variables)})
    check = arrays["x_test"][:8]
    _write(run_dir / "check_embeddings.npz", dict(images=check, embeddings=np.asarray(
        model.image_encoder()(check, training=False), np.float32)))
    _write(metrics_path, json.dumps(history, indent=2))
    checkpoint.unlink(missing_ok=True)
    print(f"finished: kNN top-1 {history['knn_top1']:.4f}, "
          f"{history['seconds_per_epoch']:.1f} s per epoch")


def _load_state(model, state):
    """Writes the trainable and non-trainable values of `state` into the model's variables."""
    for k, g in enumerate(GROUPS[:2]):
        for variable, value in zip(_group(model, g), state[k]):
            variable.assign(value)


def _knn(model, arrays, evaluation):
    """kNN top-1 on the test set of the model's online encoder (its variables loaded)."""
    return float(evaluation.knn_accuracy(model.image_encoder(), arrays["x_train"], arrays["y_train"],
                                         arrays["x_test"], arrays["y_test"]))


def finalize(args):
    """TF backend: rebuild the run's model, load weights.npz, check the embeddings the JAX
    run recorded, write encoder.keras (float32) and complete config.json for zoo.publish."""
    import keras

    from byol_tf import evaluation

    run_dir = pathlib.Path(args.run_dir)
    record = json.loads((run_dir / "config.json").read_text())
    config, derived = record["config"], record["derived"]
    with np.load(run_dir / "weights.npz") as f:
        weights = dict(f)
    keras.mixed_precision.set_global_policy(config["precision"])
    model = build(config, derived["num_classes"], derived["steps_per_epoch"])
    keys = [f"{i:04d}:{v.path}" for i, v in enumerate(model.variables)]
    if set(keys) != set(weights):
        raise SystemExit(f"weights.npz does not match the model: {sorted(set(keys) ^ set(weights))[:5]}")
    for key, variable in zip(keys, model.variables):
        variable.assign(weights[key])
    keras.mixed_precision.set_global_policy("float32")
    image_encoder = evaluation.copy_image_encoder(model.image_encoder())  # float32, for serving
    with np.load(run_dir / "check_embeddings.npz") as f:
        images, expected = f["images"], f["embeddings"]
    got = np.asarray(model.image_encoder()(images, training=False), np.float32)
    gap = float(np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-6))
    print(f"TF vs JAX embeddings of 8 test images: max relative difference {gap:.2e}")
    if gap > (1e-4 if config["precision"] == "float32" else 5e-2):  # bf16 rounds to ~4e-3 per op
        raise SystemExit("the TF model does not reproduce the JAX run's embeddings")
    image_encoder.save(run_dir / "encoder.keras")
    # What byol_tf.zoo.publish reads from a train.py run.
    config.update(total_steps=derived["total_steps"], data_dir=args.data_dir)
    record["finalized"] = dict(embedding_gap=gap, sha256=hashlib.sha256(
        (run_dir / "encoder.keras").read_bytes()).hexdigest())
    _write(run_dir / "config.json", json.dumps(record, indent=2))
    print(f"wrote {run_dir / 'encoder.keras'}")


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    finalize(arguments) if arguments.finalize else pretrain(arguments)
