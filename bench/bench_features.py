"""Feature extraction (`byol_tf.evaluation.extract_features`: what kNN, the neighbour grid
and linear evaluation spend their time on) on this machine, TF backend, batch norm on
TensorFlow's fused inference kernel (`byol_tf.layers.BatchNorm`) against Keras' composite
inference ops, alternated A B A B in one process.

    python bench/bench_features.py --encoder=tiny_resnet_cifar --images=10000 \
        --out=bench/results/features_cpu_2core.jsonl

Images are CIFAR-10 test images when `--npz` (scripts/prepare_cifar10.py) exists, else
random uint8. Images/s over `--images` per timed pass; the median of `--rounds` passes of
each path is reported. Writes a JSON line to stdout and, with --out, to a file.
"""

import json
import pathlib
import statistics
import time

from absl import app, flags

flags.DEFINE_string("encoder", "tiny_resnet_cifar", "Encoder preset.")
flags.DEFINE_integer("images", 10_000, "Images per timed pass.")
flags.DEFINE_integer("batch_size", 256, "extract_features' batch size.")
flags.DEFINE_integer("rounds", 3, "Timed passes of each path (alternated).")
flags.DEFINE_string("npz", "~/.cache/byol_data/cifar10.npz", "CIFAR-10 arrays, if there.")
flags.DEFINE_string("out", None, "Append the JSON result to this file.")
FLAGS = flags.FLAGS


def main(_):
    import byol_tf  # first: it picks TensorFlow's CPU kernels (byol_tf/runtime.py)
    import keras
    import numpy as np

    from byol_tf import encoders, evaluation, layers
    from byol_tf.image_encoder import ImageEncoder
    from byol_tf.records import versions

    npz = pathlib.Path(FLAGS.npz).expanduser()
    if npz.exists():
        images = np.load(npz)["x_test"][:FLAGS.images]
    else:
        images = np.random.default_rng(0).integers(0, 256, (FLAGS.images, 32, 32, 3), np.uint8)
    encoder = ImageEncoder(encoders.get(FLAGS.encoder))
    fused_call = layers.BatchNorm.call

    def keras_call(self, inputs, training=None, mask=None):  # Keras' own inference ops
        return keras.layers.BatchNormalization.call(self, inputs, training=training, mask=mask)

    def images_per_second(call):
        layers.BatchNorm.call = call
        try:
            evaluation.extract_features(encoder, images[:FLAGS.batch_size])  # (tracing)
            started = time.perf_counter()
            evaluation.extract_features(encoder, images, batch_size=FLAGS.batch_size)
            return len(images) / (time.perf_counter() - started)
        finally:
            layers.BatchNorm.call = fused_call

    runs = {"fused": [], "keras": []}
    for _ in range(FLAGS.rounds):
        runs["fused"].append(round(images_per_second(fused_call), 1))
        runs["keras"].append(round(images_per_second(keras_call), 1))
    fused, composite = statistics.median(runs["fused"]), statistics.median(runs["keras"])
    line = dict(bench="extract_features", encoder=FLAGS.encoder, images=len(images),
                batch_size=FLAGS.batch_size, fused_bn_images_per_s=fused,
                keras_bn_images_per_s=composite, ratio=round(fused / composite, 3), runs=runs,
                **versions(), date=time.strftime("%Y-%m-%d"))
    print(json.dumps(line))
    if FLAGS.out:
        with open(FLAGS.out, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    app.run(main)
