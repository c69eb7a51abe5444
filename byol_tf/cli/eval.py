"""Evaluate a pretrained encoder: kNN, linear evaluation, fine-tuning, semi-supervised.

    byol-eval --model=runs/<run>/encoder.keras                        # kNN on the bundled sample
    byol-eval --model=runs/<run>/byol.keras --mode=linear --dataset=cifar10 \\
        --data_dir=~/.cache/byol_data/tfds
    byol-eval --model=... --mode=semi --label_fraction=0.01 --dataset=cifar10 --data_dir=...

Modes (`--mode`):
  knn       weighted kNN, k = 200, cosine, T = 0.1, frozen encoder (InstDisc / solo-learn).
  linear    official linear evaluation: frozen encoder, batch norm in inference mode, a
            linear classifier, SGD + Nesterov 0.9, no weight decay, cosine LR from
            0.2·batch/256, train augmentation random resized crop + flip, test the plain
            image (32 px) or a 0.875 centre crop (larger), 80 epochs by default.
  finetune  the whole network trainable, same optimiser with base LR 0.01.
  semi      fine-tuning on a fixed, seeded, class-balanced --label_fraction of the training
            labels (1% or 10% in the paper); the chosen indices are written beside the JSON.

`--model` is a run's `encoder.keras` (a `byol_tf.ImageEncoder`), a whole model's `.keras` file
(BYOL, SimCLR, MoCo, MultiView: its online encoder behind its own input contract), a plain
Keras encoder that expects ImageNet-normalised images, or a zoo entry by name or handle
(`byol-eval --model=byol_tiny_resnet_cifar10`, a folder, an https://, file:// or gs:// URL).
Writes a metrics JSON (top-1, top-5, protocol, epochs, data, model, versions) next to the
model unless --out says otherwise, and beside it `<json name>_confusion.png`: the confusion
matrix of the kNN / linear / fine-tuned classifier on the test images.
"""

import json
import pathlib
import sys

from absl import app, flags

from byol_tf.cli import run_app

flags.DEFINE_string("model", None, "encoder.keras, a whole model's .keras, a plain encoder, or a "
                    "zoo entry's name or handle.", required=True)
flags.DEFINE_enum("mode", "knn", ["knn", "linear", "finetune", "semi"], "Protocol (see above).")
flags.DEFINE_string("dataset", "sample", "'sample', a fixed-size TFDS dataset (cifar10, ...) or a "
                    "folder with one sub-folder per class (and --eval_dataset).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_string("eval_dataset", None, "With --dataset=<folder of class sub-folders>: the "
                    "labelled test folder (the same class sub-folders).")
flags.DEFINE_bool("skip_bad_images", False, "Image folders: leave out (and count) files that "
                  "are not readable images instead of stopping.")
flags.DEFINE_integer("max_image_pixels", 40_000_000, "Image folders: files of more pixels are "
                     "unreadable (named, or left out with --skip_bad_images), before decoding.")
flags.DEFINE_integer("knn_k", 200, "kNN: neighbours.")
flags.DEFINE_float("temperature", 0.1, "kNN: vote temperature.")
flags.DEFINE_integer("epochs", None, "linear / finetune / semi epochs (default 80 / 30 / 30).")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_float("base_lr", None, "Base LR, scaled by batch/256 (default 0.2 linear, 0.01 else).")
flags.DEFINE_float("label_fraction", 0.01, "semi: fraction of training labels used.")
flags.DEFINE_integer("seed", 0, "Seed (label subset, classifier init, augmentation).")
flags.DEFINE_integer("max_examples", None, "Cap on train and test examples.")
flags.DEFINE_string("out", None, "Metrics JSON path (default: <model dir>/eval_<mode>_<model>_on_"
                    "<evaluated data>.json, never one that exists).")
FLAGS = flags.FLAGS


def load_encoder(model):
    """--model as an `ImageEncoder`: a `.keras` file, or a zoo entry's name or handle (a folder
    or URL, `byol_tf.zoo.load`); its problems said as --model's. A file a run saved must
    still be the one its record names (sha256)."""
    import pathlib

    from byol_tf import zoo
    from byol_tf.files import sha256_file
    from byol_tf.image_encoder import load_image_encoder
    from byol_tf.training.run_folder import RunFolder

    path = pathlib.Path(model).expanduser()
    if not path.is_file() and path.suffix != ".keras":
        try:
            return zoo.load(str(model))
        except (ValueError, OSError) as error:
            raise app.UsageError(f"--model: {error}") from None
    try:
        saved = RunFolder(path.parent).done("save") or {}
        expected = saved.get("sha256", {}).get(path.name)
        if expected and path.is_file() and sha256_file(path) != expected:
            raise ValueError(f"{path} changed since its run saved it (sha256 differs from "
                             f"{path.parent / 'phases.json'}); rerun the run's command to save "
                             "it again, or evaluate a copy outside the run folder")
        return load_image_encoder(path)
    except ValueError as error:
        raise app.UsageError(f"--model: {error}") from None


def unused_path(path):
    """`path`, or `<stem>-2…` beside it when taken: an evaluation never overwrites another."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def main(argv):
    del argv
    for name in ("epochs", "batch_size", "knn_k", "max_examples"):
        if getattr(FLAGS, name) is not None and getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be ≥ 1; got {getattr(FLAGS, name)}")
    if not 0 < FLAGS.label_fraction <= 1:
        raise app.UsageError(f"--label_fraction must be in (0, 1]; got {FLAGS.label_fraction}")
    import numpy as np

    from byol_tf import data, evaluation
    from byol_tf.files import write_json
    from byol_tf.records import versions
    from byol_tf.training import pictures
    from byol_tf.training.config import in_flag_terms

    try:
        source = data.Source.of(
            FLAGS.dataset, data_dir=FLAGS.data_dir, eval_folder=FLAGS.eval_dataset,
            skip_bad_images=FLAGS.skip_bad_images, max_image_pixels=FLAGS.max_image_pixels)
    except ValueError as error:
        raise app.UsageError(in_flag_terms(error)) from None
    encoder = load_encoder(FLAGS.model)
    print(f"Reading the images of {source.name}"
          f"{f' and {source.eval_folder}' if source.eval_folder else ''}…", flush=True)
    try:
        x_train, y_train, x_test, y_test = data.load_arrays(
            source, max_train=FLAGS.max_examples, max_test=FLAGS.max_examples,
            image_size=encoder.image_size)
        class_names = data.class_names(source)
    except ValueError as error:
        raise app.UsageError(in_flag_terms(error)) from None
    evaluated = FLAGS.eval_dataset or FLAGS.dataset  # the test images scored
    out = pathlib.Path(FLAGS.out) if FLAGS.out else unused_path(
        pathlib.Path(FLAGS.model).parent / f"eval_{FLAGS.mode}_{pathlib.Path(FLAGS.model).stem}_"
                                           f"on_{pathlib.Path(evaluated).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    extra, verbose = {}, 1 if sys.stdout.isatty() else 2
    if FLAGS.mode == "knn":
        train_features, test_features = (evaluation.extract_features(encoder, x, verbose=verbose)
                                         for x in (x_train, x_test))
        votes = evaluation.knn_votes(train_features, y_train.astype(np.int64), test_features,
                                     len(class_names), k=FLAGS.knn_k,
                                     temperature=FLAGS.temperature)
        accuracy, predictions = evaluation.votes_accuracy(votes, y_test, (1, 5)), votes.argmax(1)
        metrics = dict(protocol="knn", top1=accuracy[1], top5=accuracy[5], k=FLAGS.knn_k,
                       temperature=FLAGS.temperature,
                       train_examples=len(x_train), test_examples=len(x_test))
    else:
        if FLAGS.mode == "semi":
            subset = evaluation.label_subset(y_train, FLAGS.label_fraction, FLAGS.seed)
            subset_path = out.with_name(out.stem + "_label_subset.json")
            write_json(subset_path, dict(fraction=FLAGS.label_fraction, seed=FLAGS.seed,
                                         dataset=FLAGS.dataset, indices=subset.tolist()))
            x_train, y_train = x_train[subset], y_train[subset]
            extra = dict(label_fraction=FLAGS.label_fraction, label_subset=str(subset_path))
        protocol = "linear" if FLAGS.mode == "linear" else "finetune"
        epochs = FLAGS.epochs if FLAGS.epochs is not None else (80 if protocol == "linear" else 30)
        metrics = evaluation.supervised_eval(
            encoder, x_train, y_train, x_test, y_test, protocol=protocol, epochs=epochs,
            batch_size=min(FLAGS.batch_size, len(x_train)), base_lr=FLAGS.base_lr, seed=FLAGS.seed,
            return_predictions=True, verbose=verbose)
        predictions = metrics.pop("predictions")
        metrics["protocol"] = FLAGS.mode
    confusion_path = out.with_name(out.stem + "_confusion.png")
    pictures.confusion(y_test, predictions, class_names, confusion_path,
                       title=f"{FLAGS.mode} on {pathlib.Path(evaluated).name}: "
                             f"top-1 {metrics['top1']:.3f}")
    extra["confusion"] = str(confusion_path)
    metrics.update(extra, dataset=FLAGS.dataset, evaluated_on=evaluated, model=str(FLAGS.model),
                   seed=FLAGS.seed,
                   command=sys.argv, versions=versions())
    write_json(out, metrics)
    print(json.dumps({"mode": FLAGS.mode, "top1": metrics["top1"], "out": str(out)}))


def run():
    """The `byol-eval` command."""
    run_app(main, __name__, __doc__)


if __name__ == "__main__":
    run()
