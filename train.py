"""Pretrain BYOL (or SimCLR, MoCo v2, the multi-view objective), evaluate the encoder with
kNN against itself at random init, save.

    python train.py                                   # embedded default: bundled CIFAR-10 sample
    python train.py --dataset=cifar10 --data_dir=~/.cache/byol_data/tfds
    python train.py --dataset=/path/to/images --image_size=224 --epochs=100
    python train.py --method=moco --method_options='{"queue_size": 4096}'
    python train.py --method_options='{"use_predictor": false}'      # a BYOL ablation

Every flag left unset comes from the dataset's preset (`byol_tf/presets.py`). The run
folder gets: config.json (flags, preset, seed, library versions), metrics.json (history,
kNN), history.csv, tensorboard/, checkpoints/ (the last --keep_checkpoints, each epoch by
default), byol.keras (the whole model with optimizer state), encoder.keras (a
`byol_tf.ImageEncoder`: uint8 images of any size → embedding, the online encoder behind its
input contract) and export/byol_encoder/1/ (the same as a SavedModel for TF Serving,
byol_tf.export). Started again with the same --run_dir and flags, an unfinished run resumes
from its newest intact checkpoint, at the exact step (data stream, τ, LR, RNG included);
--time_limit_minutes=M stops such a run at an epoch's end within M minutes, so a long run goes
in segments (each process's host, steps and seconds are kept in the checkpoints and
metrics.json's "segments").
"""

import functools
import json
import pathlib
import sys
import time

PROCESS_STARTED = time.time()  # (start-up counts: the train phase's seconds include it)

from absl import app, flags, logging  # noqa: E402

import byol_tf  # noqa: E402  (before TensorFlow: it picks its CPU kernels, byol_tf/runtime.py)

flags.DEFINE_string("dataset", "sample", "'sample' (bundled), a TFDS name (cifar10, cifar100, "
                    "stl10, imagenet2012) or a folder of images.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (downloads are off).")
flags.DEFINE_bool("skip_bad_images", False, "Image folders: leave out (and count) files that "
                  "are not readable images instead of stopping with their names.")
flags.DEFINE_string("split", None, "Pretraining split (default: the dataset's training split).")
flags.DEFINE_string("preset", None, "Recipe from byol_tf/presets.py (default: by dataset).")
flags.DEFINE_string("encoder", None, "Encoder name from byol_tf.encoders.PRESETS.")
flags.DEFINE_integer("image_size", None, "Side of the augmented views, pixels.")
flags.DEFINE_integer("epochs", None, "Pretraining epochs.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_float("base_lr", None, "Base learning rate, scaled by batch/256.")
flags.DEFINE_float("weight_decay", None, "Weight decay.")
flags.DEFINE_float("tau_base", None, "Base EMA rate of the target network.")
flags.DEFINE_integer("warmup_epochs", None, "Linear LR warm-up epochs.")
flags.DEFINE_enum("optimizer", None, ["lars", "sgd", "adamw", "lamb"], "Optimizer.")
flags.DEFINE_integer("hidden_dim", None, "Projector / predictor hidden size.")
flags.DEFINE_integer("projection_dim", None, "Projector / predictor output size.")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on steps per epoch (default: one pass).")
flags.DEFINE_integer("seed", 0, "Seed of weights, augmentation and data order.")
flags.DEFINE_string("run_dir", None, "Run folder (default runs/<dataset>-<time>).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (what a TPU needs).")
flags.DEFINE_bool("knn", True, "kNN-evaluate the pretrained encoder (and, unless "
                  "--noknn_random_init, the same encoder at random init) after training.")
flags.DEFINE_bool("knn_random_init", True, "With --knn: also kNN-evaluate the same encoder at "
                  "random init (the baseline; one more feature pass over the evaluation images).")
flags.DEFINE_integer("knn_k", 200, "k of the kNN evaluation.")
flags.DEFINE_integer("knn_every", 0, "Also kNN-evaluate every N epochs during training (the "
                     "learning curve in history.csv and curves.png); 0: only after training.")
flags.DEFINE_string("eval_dataset", None, "Image folders: the labelled test folder (one "
                    "sub-folder per class, as the training folder) for kNN and --publish.")
flags.DEFINE_integer("max_eval_examples", None, "Cap on train/test examples for kNN.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy; --batch_size is global.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu ('local' on a TPU VM).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                  "Keras dtype policy: compute dtype; variables and the loss stay float32.")
flags.DEFINE_bool("deterministic", False, "tf.config.experimental.enable_op_determinism().")
flags.DEFINE_integer("checkpoint_every", None, "Checkpoint every N steps (default: each epoch).")
flags.DEFINE_float("time_limit_minutes", None, "Stop training at the last epoch end that fits in "
                   "this many minutes of this process (the run resumes when the same command is "
                   "run again): long runs in time-limited segments.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept; a corrupt newest one falls back.")
flags.DEFINE_string("publish", None, "After training, publish the encoder as this zoo entry "
                    "(byol_tf.zoo.publish: export, kNN + linear eval, model card).")
flags.DEFINE_string("zoo_dir", None, "Where --publish writes (default <run_dir>/zoo; models/ is the repo's zoo).")
flags.DEFINE_integer("publish_linear_epochs", 20, "Linear-evaluation epochs for --publish.")
flags.DEFINE_string("final_weights_npz", None, "Also write all final weights here (every worker).")
flags.DEFINE_enum("method", "byol", ["byol", "simclr", "moco", "multiview"],
                  "Self-supervised method (byol_tf.BYOL, SimCLR, MoCo, MultiView).")
flags.DEFINE_string("method_options", "{}", "JSON object of the method's constructor arguments, "
                    "e.g. '{\"beta\": 0.5}' or '{\"temperature\": 0.5}' (see README, Methods).")
FLAGS = flags.FLAGS

HYPERPARAMETERS = ("encoder", "image_size", "epochs", "batch_size", "base_lr", "weight_decay",
                   "tau_base", "warmup_epochs", "optimizer", "hidden_dim", "projection_dim")


def resolve_config():
    """Preset for the dataset, overridden by every flag given on the command line."""
    from byol_tf import presets

    name = FLAGS.preset or FLAGS.dataset
    if FLAGS.preset and FLAGS.preset not in presets.PRESETS:
        raise app.UsageError(f"Unknown preset {FLAGS.preset!r}; known: {sorted(presets.PRESETS)}")
    config = presets.for_dataset(name)
    for key in HYPERPARAMETERS:
        if getattr(FLAGS, key) is not None:
            config[key] = getattr(FLAGS, key)
    try:
        options = json.loads(FLAGS.method_options)
    except json.JSONDecodeError as e:
        raise app.UsageError(f"--method_options is not valid JSON: {e}") from None
    if not isinstance(options, dict):
        raise app.UsageError("--method_options must be a JSON object")
    # A preset may carry method options (e.g. its views); the flag's keys override them (a
    # view given in part changes only those keys of the preset's view).
    try:
        method_options = presets.merge_method_options(config.pop("method_options", {}), options)
    except ValueError as e:
        raise app.UsageError(f"--method_options {e}") from None
    config.update(method=FLAGS.method, method_options=method_options)
    config.update(dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, split=FLAGS.split,
                  preset=name if FLAGS.preset or name in presets.PRESETS else "imagenet2012",
                  seed=FLAGS.seed, steps_per_epoch=FLAGS.steps_per_epoch,
                  jit_compile=FLAGS.jit_compile, skip_bad_images=FLAGS.skip_bad_images)
    for key in ("epochs", "batch_size", "image_size", "hidden_dim", "projection_dim"):
        if config[key] is not None and config[key] < 1:
            raise app.UsageError(f"--{key} must be ≥ 1; got {config[key]}")
    if config["base_lr"] <= 0 or config["weight_decay"] < 0 or config["warmup_epochs"] < 0:
        raise app.UsageError("--base_lr must be > 0, --weight_decay and --warmup_epochs ≥ 0")
    if not 0.0 <= config["tau_base"] <= 1.0:
        raise app.UsageError(f"--tau_base must be in [0, 1]; got {config['tau_base']}")
    return config


def build_model(config, info):
    """The compiled model of a resolved config (total_steps, steps_per_epoch set)."""
    import keras

    import byol_tf
    from byol_tf import methods

    keras.utils.set_random_seed(config["seed"])
    encoder = byol_tf.encoders.get(config["encoder"])
    try:
        model = methods.build(config, encoder, info["num_classes"], config["total_steps"])
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    total_steps, steps_per_epoch = config["total_steps"], config["steps_per_epoch"]
    schedule = byol_tf.WarmupCosine(config["base_lr"], config["batch_size"], total_steps,
                                    min(config["warmup_epochs"] * steps_per_epoch, total_steps - 1))
    optimizer = byol_tf.optimizers.get(config["optimizer"], schedule, config["weight_decay"])
    model.compile(optimizer=optimizer, jit_compile=config["jit_compile"])
    return model


def make_strategy(name, tpu):
    """`tf.distribute` strategy by flag; (strategy, is_chief)."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy(), True
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), True
    if name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), True
    else:
        raise app.UsageError(f"Unknown --strategy {name!r}")
    resolver = strategy.cluster_resolver
    chief_exists = "chief" in resolver.cluster_spec().as_dict()
    is_chief = (resolver.task_type in (None, "chief") or
                (resolver.task_type == "worker" and resolver.task_id == 0 and not chief_exists))
    return strategy, is_chief


def _warn_if_bfloat16_is_emulated(precision, strategy):
    """mixed_bfloat16 on a CPU without native bfloat16 (AVX512-BF16 or AMX) is emulated:
    say so before training, with the host's CPU."""
    import tensorflow as tf

    from byol_tf.records import host

    if precision != "mixed_bfloat16" or tf.config.list_logical_devices("GPU") or isinstance(
            strategy, tf.distribute.TPUStrategy):
        return
    cpu = host()
    if not {"avx512_bf16", "amx_bf16"} & set(cpu["isa"]):
        logging.warning(
            "--precision=mixed_bfloat16 on %s (%s) without native bfloat16 (AVX512-BF16 or "
            "AMX): every bfloat16 convolution is emulated and the step is several times slower "
            "than float32 on such CPUs; use --precision=float32 here (bfloat16 pays off on "
            "TPUs, recent GPUs and CPUs with AVX512-BF16/AMX).", cpu["cpu"],
            ", ".join(cpu["isa"]) or "no AVX2")


def finish_together(strategy):
    """Multi-worker: returns once every worker has called it (an all-reduce of ones), so that
    no worker exits while the chief still works: TensorFlow's coordination service leaves a
    worker that exited first hanging at exit when the chief leaves. A worker whose peer left
    as soon as its own copy of the sum was complete sees the connection closed: that too
    means every worker got here."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        try:
            strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)
        except tf.errors.UnavailableError as error:
            logging.info("finish_together: a worker left first (%s)", str(error)[:200])


def main(argv):
    del argv
    import keras
    import numpy as np
    import tensorflow as tf

    from byol_tf import data, evaluation, export, methods, pictures, runs, zoo
    from byol_tf.checkpoints import CheckpointManager, SaveEvery
    from byol_tf.records import versions, write_json

    # ------------------------------------------------ validate: nothing is written before
    config = resolve_config()
    if FLAGS.time_limit_minutes is not None and FLAGS.time_limit_minutes <= 0:
        raise app.UsageError(f"--time_limit_minutes must be > 0; got {FLAGS.time_limit_minutes}")
    if FLAGS.time_limit_minutes and FLAGS.strategy == "multi_worker":
        raise app.UsageError("--time_limit_minutes: each worker would stop by its own clock and "
                             "the others would wait for it; stop a multi-worker run from outside "
                             "(it resumes from its checkpoints)")
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy, is_chief = make_strategy(FLAGS.strategy, FLAGS.tpu)
    run = runs.RunFolder(FLAGS.run_dir or f"runs/{pathlib.Path(FLAGS.dataset).name}-"
                         f"{time.strftime('%Y%m%d-%H%M%S')}", is_chief, started=PROCESS_STARTED)
    view1, view2 = methods.view_configs(config)
    # One endless, seeded stream: a resume at step k reads it from batch k (`skip(k)`).
    try:
        dataset, info = data.pretrain_dataset(
            config["dataset"], config["batch_size"], image_size=config["image_size"],
            data_dir=config["data_dir"], split=config["split"], seed=config["seed"],
            view1=view1, view2=view2, repeat=True, skip_bad_images=config["skip_bad_images"])
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    steps_per_epoch = info["num_examples"] // config["batch_size"]
    if config["steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, config["steps_per_epoch"])
    total_steps = steps_per_epoch * config["epochs"]
    config.update(image_size=info["image_size"], num_examples=info["num_examples"],
                  steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                  strategy=FLAGS.strategy, replicas=strategy.num_replicas_in_sync,
                  deterministic=FLAGS.deterministic, precision=FLAGS.precision)
    try:
        run.check(config)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    knn = FLAGS.knn and bool(info["num_classes"])
    folder = config["dataset"] not in ("sample", *data.TFDS_DATASETS)
    if folder and (knn or FLAGS.publish) and not FLAGS.eval_dataset:
        raise app.UsageError(
            f"--knn and --publish evaluate on a labelled test split: pass --eval_dataset=<folder "
            f"with the class sub-folders of {config['dataset']}>, or --noknn (and no --publish)")
    if FLAGS.eval_dataset and not pathlib.Path(FLAGS.eval_dataset).expanduser().is_dir():
        raise app.UsageError(f"--eval_dataset: no such folder {FLAGS.eval_dataset}")
    publish_root = pathlib.Path(FLAGS.zoo_dir or run.path / "zoo")
    published_here = FLAGS.publish and zoo.published_from(FLAGS.publish, run.path, publish_root)
    if FLAGS.publish and (publish_root / FLAGS.publish).exists() and not published_here:
        raise app.UsageError(f"--publish: zoo entry {publish_root / FLAGS.publish} exists and "
                             "was not published from this run; choose another name")
    _warn_if_bfloat16_is_emulated(FLAGS.precision, strategy)
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    with strategy.scope():
        model = build_model(config, info)
    random_init_encoder = (evaluation.copy_image_encoder(model.image_encoder())
                           if knn and FLAGS.knn_random_init else None)

    @functools.cache
    def eval_arrays():
        """(x_train, y_train, x_test, y_test) of the kNN evaluations, loaded once."""
        return data.load_arrays(config["dataset"], config["data_dir"], FLAGS.max_eval_examples,
                                FLAGS.max_eval_examples, eval_folder=FLAGS.eval_dataset,
                                image_size=config["image_size"])
    logging.info("config: %s", config)

    # ------------------------------------------------ record the config, then the phases
    run.start(config, sys.argv, versions())
    manager = CheckpointManager(run.path / "checkpoints", keep=FLAGS.keep_checkpoints,
                                is_chief=is_chief)
    history = runs.RunHistory(run)
    step = start_step = manager.restore(model)
    history.restore(manager.state, mid_epoch=step % steps_per_epoch != 0)
    trained = run.done("train")
    knn_every = None
    if not trained:
        measure = []  # before `history`: it adds knn_top1 to the epoch's logs
        if knn and FLAGS.knn_every:
            knn_every = evaluation.KnnEvery(eval_arrays(), FLAGS.knn_every, config["epochs"],
                                            k=FLAGS.knn_k)
            measure = [knn_every]
        limit = (runs.TimeLimit(60 * FLAGS.time_limit_minutes, PROCESS_STARTED)
                 if FLAGS.time_limit_minutes else None)
        callbacks = [keras.callbacks.TerminateOnNaN(), *measure, history,
                     SaveEvery(manager, FLAGS.checkpoint_every or steps_per_epoch,
                               steps_per_epoch, history.state), *([limit] if limit else [])]
        if is_chief:
            callbacks.append(keras.callbacks.TensorBoard(str(run.path / "tensorboard"),
                                                         update_freq="epoch"))
        # A resume inside an epoch first finishes that epoch, then runs whole ones.
        while step < total_steps:
            epoch = step // steps_per_epoch
            last_epoch = config["epochs"] if step % steps_per_epoch == 0 else epoch + 1
            try:
                model.fit(dataset.skip(step), initial_epoch=epoch, epochs=last_epoch,
                          steps_per_epoch=steps_per_epoch - step % steps_per_epoch,
                          callbacks=callbacks, verbose="auto")
            except tf.errors.InvalidArgumentError:
                bad = data.undecodable_images(info.get("files", []))
                if bad:  # name the files (the checkpoints so far are kept)
                    raise app.UsageError(f"{config['dataset']}: {data.describe_bad_images(bad)}; "
                                         "remove them or pass --skip_bad_images") from None
                raise
            step = int(model.optimizer.iterations.numpy())
            if model.stop_training:  # TerminateOnNaN
                break
        # The same decision on every worker: saving reads the metrics, an all-reduce each.
        if step not in (start_step, manager.last_saved_step):
            manager.save(model, step, history.state())
        if limit and limit.stopped and step < total_steps:
            print(f"Stopped at the time limit after step {step} of {total_steps} (epoch "
                  f"{step // steps_per_epoch} of {config['epochs']}); run the same command "
                  f"again to continue. Run folder: {run.path}")
            return
        trained = dict(final_step=step, resumed_from_step=start_step, history=history.by_key(),
                       train_seconds=round(history.train_seconds, 1),
                       segments=history.segments(),
                       stopped_early=bool(model.stop_training) and not (limit and limit.stopped))
        run.finish("train", **trained)

    if FLAGS.final_weights_npz:  # every worker: for checking replicas and workers agree
        np.savez(FLAGS.final_weights_npz, **{v.path: np.asarray(v.numpy()) for v in model.weights},
                 step=step)
    try:  # every worker ends in finish_together, the chief after its phases
        if not is_chief:  # the chief alone saves, evaluates, exports and publishes
            return
        if not run.done("save"):
            run.save_keras(model, "byol.keras")
            run.save_keras(model.image_encoder(), "encoder.keras")
            run.finish("save", files=["byol.keras", "encoder.keras"])
        image_encoder = keras.models.load_model(run.path / "encoder.keras")

        evaluated = run.done("evaluate")
        if knn and not evaluated:
            x_train, y_train, x_test, y_test = eval_arrays()
            if knn_every and knn_every.features_step == step:  # measured on these weights already
                features = knn_every.features
            else:
                features = [evaluation.extract_features(image_encoder, x)
                            for x in (x_train, x_test)]
            scores = dict(pretrained=evaluation.knn_accuracy_of_features(
                features[0], y_train, features[1], y_test, k=FLAGS.knn_k))
            if FLAGS.knn_random_init:
                scores["random_init"] = evaluation.knn_accuracy(
                    random_init_encoder, x_train, y_train, x_test, y_test, k=FLAGS.knn_k)
            pictures.neighbour_grid(features[0], x_train, y_train, features[1], x_test, y_test,
                                    data.class_names(config["dataset"], config["data_dir"],
                                                     FLAGS.eval_dataset),
                                    run.path / "neighbours.png")
            evaluated = dict(knn=dict(scores, k=FLAGS.knn_k, temperature=0.1,
                                      train_examples=len(x_train), test_examples=len(x_test)),
                             pictures=["curves.png", "neighbours.png"])
            run.finish("evaluate", **evaluated)
            print(f"kNN top-1 (k={FLAGS.knn_k}): pretrained {scores['pretrained']:.4f}" + (
                f", same encoder at random init {scores['random_init']:.4f}"
                if "random_init" in scores else ""))

        saved_model = run.path / "export" / "byol_encoder" / "1"
        if not run.done("export"):
            if not saved_model.exists():  # (an export is atomic: a folder there is complete)
                export.export_encoder(image_encoder, saved_model)
            run.finish("export", saved_model=str(saved_model))

        metrics = dict(saved_model=str(saved_model), segments=trained.get("segments", []),
                       **{k: trained[k] for k in ("train_seconds", "final_step",
                                                  "resumed_from_step", "history")})
        if evaluated:
            metrics["knn"] = evaluated["knn"]
        metrics["phase_seconds"] = run.phase_seconds()
        write_json(run.path / "metrics.json", metrics)
        entry = publish_root / FLAGS.publish if FLAGS.publish else None
        if entry and (run.done("publish") or {}).get("entry") != str(entry):
            if not published_here:  # (a publish is atomic: an entry from this run is complete)
                zoo.publish(run.path, FLAGS.publish, root=publish_root,
                            linear_epochs=FLAGS.publish_linear_epochs,
                            eval_dataset=FLAGS.eval_dataset)
            results = zoo.info(FLAGS.publish, entry.parent)["results"]
            run.finish("publish", entry=str(entry), knn_top1=results["knn_top1"],
                       linear_top1=results["linear_top1"])
            print(f"Zoo entry: {entry} (kNN {results['knn_top1']:.4f}, "
                  f"linear {results['linear_top1']:.4f})")
        print(f"Run folder: {run.path}")
    finally:
        finish_together(strategy)


if __name__ == "__main__":
    app.run(main)
