"""The one trainer: a run's phases, on the TensorFlow or the JAX backend.

    (validate the whole config — nothing is written before this succeeds)
    config.json → train → save → evaluate → export → publish

`run(options, argv, started)` takes train.py's flags (any object with the same attributes),
resolved once into a `RunConfig` (`byol_tf.training.config`) that every phase reads. Every
phase is recorded in the run folder when complete (`RunFolder`); a rerun of the same command
skips the recorded phases and resumes training from the newest intact checkpoint, at the
exact step. On the JAX backend the export (and so the publish) needs TensorFlow's
SavedModel: the run stops after its evaluation, and the same command under
`KERAS_BACKEND=tensorflow` adds them to the same folder.
"""

import functools
import pathlib
import shutil
import sys
import time

import keras
import numpy as np

from byol_tf import compat, data, evaluation, export, runtime, zoo
from byol_tf.files import LockedError, sha256_file
from byol_tf.records import versions
from byol_tf.training import build, publish, run_folder
from byol_tf.training.checkpoints import CheckpointManager, SaveEvery
from byol_tf.training.config import (ConfigError, Host, default_run_dir, in_flag_terms, resolve,
                                     view_configs)
from byol_tf.training.divergence import DivergenceGuard, Diverged


class Run:
    """A validated run: its config (resolved once), data stream, strategy, folder and model."""

    def __init__(self, options, given, started):
        from byol_tf.training import memory

        backend = keras.backend.backend()
        self.strategy = build.Strategy(options.strategy, options.tpu)
        accelerator = options.strategy == "tpu" or runtime.accelerator_present()
        host = Host(accelerator=accelerator,
                    available_bytes=None if accelerator else memory.available_bytes(),
                    backend=backend, replicas=self.strategy.replicas)
        run_dir = options.run_dir or default_run_dir(options.dataset)
        self.folder = run_folder.RunFolder(run_dir, self.strategy.is_chief, started=started)
        try:  # (a run that never trained gives way to this command's config)
            previous = None if self.folder.untrained() else self.folder.recorded_config()
        except ValueError as error:
            raise ConfigError(str(error)) from None
        self.config, self.notes = resolve(options, given, host, previous, run_dir=run_dir)
        config = self.config
        try:
            self.folder.check(config)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if config.publish:
            publish.check_name(config.publish, self.folder.path, self.publish_root)
        if config.deterministic and backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.enable_op_determinism()
        self.dataset, self.info = self.stream()
        if self.info["num_examples"] != config.num_examples:  # (the folder changed meanwhile)
            raise ConfigError(f"--dataset={config.dataset} changed while the run started "
                              f"({config.num_examples} then {self.info['num_examples']} examples)")
        for note in self.notes:
            print(note)
        if config.time_budget_minutes and not config.budget:
            self.config = self.sized_to_budget(options, given, host, run_dir, started)
        self.build()

    def sized_to_budget(self, options, given, host, run_dir, started):
        """The config with its steps planned to end within `--time_budget_minutes`
        (`byol_tf.training.budget`), measured on this machine with a throw-away model."""
        from byol_tf.training import budget

        config = self.config
        seconds = 60 * config.time_budget_minutes
        read_started = time.time()
        evaluates = config.knn or bool(config.publish)  # (a publish evaluates too)
        forward_images = self.eval_arrays[0] if evaluates else None
        read_seconds = time.time() - read_started
        print(f"Measuring this machine for the {config.time_budget_minutes:g}-minute budget "
              f"(a throw-away copy of the model trains for a few seconds)…", flush=True)
        keras.mixed_precision.set_global_policy(config.precision)
        with self.strategy.scope():
            measured = budget.measure(lambda: build.build_model(config, config.num_classes),
                                      self.stream()[0], seconds, forward_images)
        train_images = test_images = 0
        if evaluates:
            train_images, test_images = len(self.eval_arrays[0]), len(self.eval_arrays[2])
        knn_passes = (1 + config.knn_random_init + bool(config.init_from)) if config.knn else 0
        after = budget.after_training_seconds(
            measured, train_images, test_images, knn_passes,
            config.publish_linear_epochs if config.publish else None, read_seconds)
        epoch_seconds = budget.EPOCH_SECONDS + (
            budget.evaluation_pass_seconds(measured, train_images + test_images)
            / config.knn_every if config.knn_every else 0.0)
        spent = time.time() - started
        step_seconds = measured["step_seconds"] * config.accumulation_steps  # (an optimizer step)
        try:
            steps = budget.plan(seconds, spent, step_seconds, measured["first_step_seconds"],
                                after, epoch_seconds, config.steps_per_epoch)
        except budget.BudgetTooSmall as error:
            raise ConfigError(f"--time_budget_minutes={config.time_budget_minutes:g}: "
                              f"{error}") from None
        decision = dict(measured, steps=steps, spent_seconds=round(spent, 1),
                        after_training_seconds=round(after, 1),
                        epoch_seconds=round(epoch_seconds, 3),
                        planned_seconds=round(spent + after + budget.training_seconds(
                            steps, step_seconds, measured["first_step_seconds"], epoch_seconds,
                            config.steps_per_epoch), 1))
        sized, notes = resolve(options, given, host, None, run_dir=run_dir, budget=decision)
        for note in notes:
            if note not in self.notes:
                print(note)
        print(f"Budget {config.time_budget_minutes:g} minutes: a step takes "
              f"{measured['step_seconds']:.2f} s here ({sized.batch_size / measured['step_seconds']:.0f} "
              f"images/s), the first {measured['first_step_seconds']:.0f} s longer; evaluation, "
              f"saving and export about {after:.0f} s: training for {sized.total_steps} steps "
              f"({sized.epochs} epochs of {sized.steps_per_epoch}), the schedules sized to them.",
              flush=True)
        return sized

    def stream(self):
        """(dataset, info): the run's one endless, seeded stream of batches (a resume at step
        k reads it from batch k: `skip(k)`)."""
        config = self.config
        view1, view2 = view_configs(config)
        try:
            return data.pretrain_dataset(
                config.source(), config.micro_batch_size, image_size=config.image_size,
                seed=config.seed, view1=view1, view2=view2, repeat=True)
        except ValueError as error:
            raise ConfigError(in_flag_terms(error)) from None

    def build(self):
        """Builds the model (said first: a large encoder takes a while); the model's options
        are checked here, before anything is written."""
        config = self.config
        print(f"Building {config.method.upper()} with the {config.encoder} encoder at "
              f"{config.image_size} px…", flush=True)
        build.warn_if_bfloat16_is_emulated(config.precision, self.strategy)
        keras.mixed_precision.set_global_policy(config.precision)
        with self.strategy.scope():
            self.model = build.build_model(config, config.num_classes)
        self.random_init = (evaluation.copy_image_encoder(self.model.image_encoder())
                            if config.knn and config.knn_random_init else None)

    def parent_encoder(self):
        """The `ImageEncoder` of the zoo entry `--init_from` names."""
        try:
            return zoo.load(self.config.init_from)
        except (ValueError, OSError) as error:
            raise ConfigError(f"--init_from={self.config.init_from}: {error}") from None

    def start_from_parent(self):
        """The online encoder (and the EMA copies) from `--init_from`'s entry."""
        parent = self.config.parent
        print(f"Starting the encoders from zoo entry {parent['name']} ({parent['architecture']}"
              f" trained on {parent['dataset']}).", flush=True)
        try:
            self.model.start_from_encoder(self.parent_encoder().encoder)
        except ValueError as error:
            raise ConfigError(f"--init_from={self.config.init_from}: {error}") from None

    @property
    def publish_root(self):
        return pathlib.Path(self.config.zoo_dir or self.folder.path / "zoo")

    def probe_images(self):
        """16 uint8 images whose representation `DivergenceGuard` watches: test images when
        the run evaluates, else fixed noise."""
        if self.config.knn:
            return self.eval_arrays[2][:16]
        side = self.config.image_size
        return np.random.default_rng(0).integers(0, 256, (16, side, side, 3), dtype=np.uint8)

    @functools.cached_property
    def eval_arrays(self):
        """(x_train, y_train, x_test, y_test) of the kNN evaluations, loaded once."""
        cap = self.config.max_eval_examples
        source = self.config.eval_source()
        print(f"Reading the evaluation images of {source.name}"
              f"{f' and {source.eval_folder}' if source.eval_folder else ''}"
              f"{f' (at most {cap} of each split)' if cap else ''}…", flush=True)
        try:
            return data.load_arrays(source, max_train=cap, max_test=cap,
                                    image_size=self.config.image_size)
        except data.DataError as error:
            raise ConfigError(in_flag_terms(error)) from None


def run(options, argv, started, given=None):
    """Runs (or resumes) the run `options` describe (train.py's flags, or any object with
    their attributes; `given`: the names given explicitly, see `config.resolve`); `started`
    is the process's start (a `time.time()`: the train phase's seconds count from it). Raises
    ConfigError for a bad option before anything is written."""
    r = Run(options, given, started)
    try:
        r.folder.lock()
    except LockedError as error:
        raise ConfigError(str(error)) from None
    try:
        run_locked(r, argv, started)
    finally:  # however it ends (a kill leaves the file, which the next run takes over)
        r.folder.unlock()


def run_locked(r, argv, started):
    """`run`'s phases, the folder locked by this process."""
    config = r.config
    r.folder.start(r.config, argv, versions())
    manager = CheckpointManager(r.folder.path / "checkpoints", keep=config.keep_checkpoints,
                                is_chief=r.strategy.is_chief)
    # Steps here are batches (`fit`'s, the stream's position, the checkpoints' names): with
    # --accumulation_steps N, N micro-batches per optimizer step.
    history = run_folder.RunHistory(r.folder, r.config.micro_batch_size)
    step = start_step = manager.restore(r.model)
    if step == 0 and config.init_from:
        r.start_from_parent()
    history.restore(manager.state, mid_epoch=step % config.batches_per_epoch != 0)
    trained, knn_every = r.folder.done("train"), None
    if trained and trained.get("final_step") != step:  # (bound to the newest checkpoint)
        print(f"{r.folder.phases_path}: the train record says step {trained.get('final_step')}, "
              f"the newest intact checkpoint is at step {step}; redoing the phases from there.")
        r.folder.forget("train")
        trained = None
    if not trained:
        trained, knn_every = train(r, manager, history, step, start_step, started)
        if trained is None:  # stopped at the time limit
            return
    if config.final_weights_npz:  # every worker: for checking replicas and workers agree
        np.savez(config.final_weights_npz, step=compat.batch_count(r.model.optimizer),
                 **{v.path: np.asarray(v.numpy()) for v in r.model.weights})
    try:  # every worker ends in finish_together, the chief after its phases
        if r.strategy.is_chief:  # the chief alone saves, evaluates, exports and publishes
            chief_phases(r, trained, knn_every)
    finally:
        r.strategy.finish_together()


def train(r, manager, history, step, start_step, started):
    """The train phase: `fit` over the stream from `step`, checkpointed; returns (its record,
    the kNN callback), or (None, None) when it stopped at the time limit."""
    config, model = r.config, r.model
    steps_per_epoch, total_steps = config.batches_per_epoch, config.total_batches
    knn_every = None
    if r.config.knn and config.knn_every:
        knn_every = evaluation.KnnEvery(r.eval_arrays, config.knn_every, config.epochs,
                                        k=config.knn_k)
    limit = (run_folder.TimeLimit(60 * config.time_limit_minutes, started)
             if config.time_limit_minutes else None)
    # KnnEvery before `history`: it adds knn_top1 to the epoch's logs.
    guard = DivergenceGuard(r.probe_images())
    callbacks = [guard, *([knn_every] if knn_every else []), history,
                 SaveEvery(manager, config.checkpoint_every * config.accumulation_steps,
                           steps_per_epoch, history.state, healthy=guard.healthy),
                 *([limit] if limit else [])]
    if r.strategy.is_chief and keras.backend.backend() == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(str(r.folder.path / "tensorboard"),
                                                     update_freq="epoch"))
    accumulated = (f" ({config.accumulation_steps} micro-batches of {config.micro_batch_size} "
                   "per optimizer step)" if config.accumulation_steps > 1 else "")
    print(f"Training from step {step} of {total_steps}{accumulated} (the first step compiles "
          "the training step: it takes longer)…", flush=True)
    # A terminal gets Keras' progress bar; a log file or pipe plain lines (run_folder.PlainProgress).
    terminal = sys.stdout.isatty()
    if not terminal and r.strategy.is_chief:
        callbacks.append(run_folder.PlainProgress(config.epochs))
    # A resume inside an epoch first finishes that epoch, then runs whole ones.
    while step < total_steps:
        epoch = step // steps_per_epoch
        last_epoch = config.epochs if step % steps_per_epoch == 0 else epoch + 1
        try:  # (the checkpoints so far are kept)
            with data.bad_images_named(config.dataset, r.info):
                model.fit(r.dataset.skip(step), initial_epoch=epoch, epochs=last_epoch,
                          steps_per_epoch=steps_per_epoch - step % steps_per_epoch,
                          callbacks=callbacks, verbose=1 if terminal else 0, shuffle=False)
        except ValueError as error:
            raise ConfigError(in_flag_terms(error)) from None
        step = compat.batch_count(model.optimizer)
        if model.stop_training:  # diverged, or the time limit
            break
    if guard.reason:
        raise Diverged(f"training diverged {guard.reason}; nothing after the last checkpoint "
                       f"was kept (step {max(manager.steps(), default=0)}). Lower --base_lr (it is "
                       f"{config.base_lr}) or check the data, then choose another run folder")
    # The same decision on every worker: saving reads the metrics, an all-reduce each.
    if step not in (start_step, manager.last_saved_step):
        manager.save(model, step, history.state())
    if limit and limit.stopped and step < total_steps:
        print(f"Stopped at the time limit after step {step} of {total_steps} (epoch "
              f"{step // steps_per_epoch} of {config.epochs}); run the same command "
              f"again to continue. Run folder: {r.folder.path}")
        return None, None
    record = dict(final_step=step, resumed_from_step=start_step, history=history.by_key(),
                  train_seconds=round(history.train_seconds, 1), segments=history.segments(),
                  images_per_second=history.throughput)
    r.folder.finish("train", **record)
    return record, knn_every


def chief_phases(r, trained, knn_every):
    """save → evaluate → export → publish, each skipped when recorded."""
    config, folder = r.config, r.folder
    if not saved_files_verify(r, trained):
        folder.save_keras(r.model, "byol.keras")
        folder.save_keras(r.model.image_encoder(), "encoder.keras")
        names = ["byol.keras", "encoder.keras"]
        folder.finish("save", files=names,
                      sha256={n: sha256_file(folder.path / n) for n in names})
    image_encoder = keras.models.load_model(folder.path / "encoder.keras")
    evaluated = folder.done("evaluate")
    if r.config.knn and not evaluated:
        evaluated = evaluate(r, image_encoder, knn_every)
    metrics = {k: trained[k] for k in ("train_seconds", "final_step", "resumed_from_step",
                                       "history")}
    metrics.update(segments=trained.get("segments", []),
                   images_per_second=trained.get("images_per_second", {}))
    if evaluated:
        metrics["knn"] = evaluated["knn"]
    if keras.backend.backend() != "tensorflow":
        metrics["phase_seconds"] = folder.phase_seconds()
        folder.write_metrics(metrics)
        print(f"Run folder: {folder.path}. The SavedModel export (and --publish) needs the "
              "tensorflow backend: run the same command with KERAS_BACKEND=tensorflow to add "
              "them.")
        return
    saved_model = folder.export_path
    exported = folder.done("export") or {}
    if not (exported and export.is_complete(saved_model, exported.get("sha256"))):
        if not export.is_complete(saved_model):  # (missing, or damaged since: redone)
            shutil.rmtree(saved_model, ignore_errors=True)
            export.export_encoder(image_encoder, saved_model)
        folder.finish("export", saved_model=str(saved_model),
                      sha256=export.file_hashes(saved_model))
    metrics.update(saved_model=str(saved_model), phase_seconds=folder.phase_seconds())
    folder.write_metrics(metrics)
    if config.publish:
        publish_phase(r)
    print(f"Run folder: {folder.path}")


def saved_files_verify(r, trained):
    """Whether the save phase is recorded and its files match their recorded sha256. A file
    changed since is saved again from the model, which holds the run's final weights when
    its final checkpoint was restored; otherwise the file is named (ConfigError)."""
    saved = r.folder.done("save")
    if not saved:
        return False
    damaged = [n for n, digest in saved.get("sha256", {}).items()
               if sha256_file(r.folder.path / n) != digest]
    if not damaged:
        return True
    final = trained.get("final_step")
    if compat.batch_count(r.model.optimizer) != final:
        raise ConfigError(f"{', '.join(str(r.folder.path / n) for n in damaged)} changed since "
                          f"the run saved it (sha256) and the final checkpoint (step {final}) "
                          "is gone; choose another run folder")
    print(f"{', '.join(damaged)} changed since the run saved it (sha256): saving it again from "
          f"the final checkpoint (step {final}).")
    return False


def publish_phase(r):
    """The publish phase: the run as zoo entry `--publish` (`publish.publish_run`)."""
    name, root, folder = r.config.publish, r.publish_root, r.folder
    entry = root / name
    published = publish.published_from(name, folder.path, root)  # (a publish is atomic)
    if published:
        try:  # recorded is not enough: the entry's files must match its card
            zoo.verified_files(name, root)
        except (ValueError, OSError) as error:
            print(f"Zoo entry {entry} does not verify ({error}); publishing it again.")
            published = False
    if published and (folder.done("publish") or {}).get("entry") == str(entry):
        return
    if not published:
        try:  # (an entry this run published is replaced; another's, published meanwhile, not)
            publish.publish_run(folder.path, name, root, r.config.publish_linear_epochs,
                                eval_dataset=r.config.eval_dataset, replace_own=True,
                                verbose=1 if sys.stdout.isatty() else 2)
        except (FileExistsError, LockedError) as error:
            raise ConfigError(f"--publish={name}: {error}; the run is kept: rerun with another "
                              "--publish to publish it") from None
    results = zoo.info(name, root)["results"]
    folder.finish("publish", entry=str(entry), knn_top1=results["knn_top1"],
                  linear_top1=results["linear_top1"])
    print(f"Zoo entry: {entry} (kNN {results['knn_top1']:.4f}, "
          f"linear {results['linear_top1']:.4f})")


def evaluate(r, image_encoder, knn_every):
    """The evaluate phase: kNN of the pretrained encoder (and of the same encoder at random
    init), the neighbour picture; returns its record."""
    from byol_tf.training import pictures

    k = r.config.knn_k
    x_train, y_train, x_test, y_test = r.eval_arrays
    step = compat.batch_count(r.model.optimizer)
    verbose = 1 if sys.stdout.isatty() else 2
    if knn_every and knn_every.features_step == step:  # measured on these weights already
        features = knn_every.features
    else:
        print("kNN evaluation of the pretrained encoder:")
        features = [evaluation.extract_features(image_encoder, x, verbose=verbose)
                    for x in (x_train, x_test)]
    scores = dict(pretrained=evaluation.knn_accuracy_of_features(
        features[0], y_train, features[1], y_test, k=k))
    if r.random_init is not None:
        print("kNN evaluation of the same encoder at random init:")
        scores["random_init"] = evaluation.knn_accuracy(r.random_init, x_train, y_train,
                                                        x_test, y_test, k=k, verbose=verbose)
    if r.config.init_from:  # the entry it started from, as a user loads it (zoo.load)
        print(f"kNN evaluation of {r.config.parent['name']} as it is (--init_from):")
        scores["parent"] = evaluation.knn_accuracy(r.parent_encoder(), x_train, y_train,
                                                   x_test, y_test, k=k, verbose=verbose)
    pictures.neighbour_grid(features[0], x_train, y_train, features[1], x_test, y_test,
                            data.class_names(r.config.eval_source()),
                            r.folder.path / "neighbours.png")
    record = dict(knn=dict(scores, k=k, temperature=0.1, train_examples=len(x_train),
                           test_examples=len(x_test)),
                  pictures=["curves.png", "neighbours.png"])
    r.folder.finish("evaluate", **record)
    print(f"kNN top-1 (k={k}): pretrained {scores['pretrained']:.4f}" + (
        f", same encoder at random init {scores['random_init']:.4f}"
        if "random_init" in scores else "") + (
        f", {r.config.parent['name']} as it is {scores['parent']:.4f}"
        if "parent" in scores else ""))
    return record
