"""Evaluate a pretrained encoder with weighted kNN (k = 200, T = 0.1, cosine).

    python eval.py --model=runs/sample-.../encoder.keras            # the bundled sample
    python eval.py --model=runs/x/byol.keras --dataset=cifar10 --data_dir=~/.cache/byol_data/tfds

`--model` is an encoder `.keras` file or a whole BYOL `.keras` file (its online encoder is
used). Writes a metrics JSON (accuracy, protocol, data, model, versions) next to the model
unless --out says otherwise. Linear evaluation and fine-tuning come with the evaluation issue.
"""

import json
import pathlib
import sys

from absl import app, flags

flags.DEFINE_string("model", None, "Encoder or BYOL .keras file.", required=True)
flags.DEFINE_string("dataset", "sample", "'sample' or a fixed-size TFDS dataset (cifar10, ...).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_integer("knn_k", 200, "Neighbours.")
flags.DEFINE_float("temperature", 0.1, "Vote temperature.")
flags.DEFINE_integer("max_examples", None, "Cap on train and test examples.")
flags.DEFINE_string("out", None, "Metrics JSON path (default: <model dir>/eval_knn_<dataset>.json).")
FLAGS = flags.FLAGS


def load_encoder(path):
    import keras

    import byol_tf

    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise app.UsageError(f"--model: no such file {path}")
    try:
        model = keras.models.load_model(path)
    except Exception as error:
        raise app.UsageError(f"--model: {path} is not a readable .keras model ({error})")
    return model.online_encoder if isinstance(model, byol_tf.BYOL) else model


def main(argv):
    del argv
    import keras

    from byol_tf import data, evaluation
    from byol_tf.records import versions, write_json

    encoder = load_encoder(FLAGS.model)
    x_train, y_train, x_test, y_test = data.load_arrays(
        FLAGS.dataset, FLAGS.data_dir, FLAGS.max_examples, FLAGS.max_examples)
    accuracy = evaluation.knn_accuracy(encoder, x_train, y_train, x_test, y_test,
                                       k=FLAGS.knn_k, temperature=FLAGS.temperature)
    metrics = dict(protocol="knn", top1=accuracy, k=FLAGS.knn_k, temperature=FLAGS.temperature,
                   dataset=FLAGS.dataset, train_examples=len(x_train), test_examples=len(x_test),
                   model=str(FLAGS.model), command=sys.argv, versions=versions(),
                   keras_backend=keras.backend.backend())
    out = pathlib.Path(FLAGS.out or pathlib.Path(FLAGS.model).parent /
                       f"eval_knn_{pathlib.Path(FLAGS.dataset).name}.json")
    write_json(out, metrics)
    print(json.dumps({"knn_top1": accuracy, "out": str(out)}))


if __name__ == "__main__":
    app.run(main)
