"""`byol-convert`: a DeepMind BYOL checkpoint → Keras models and a SavedModel.

    byol-convert --checkpoint=pretrain_res50x1.pkl --out=exports/byol_res50x1

(The mapping itself is `byol_tf.convert.from_deepmind`.)
"""

import pathlib

import keras
from absl import flags, logging

from byol_tf.cli import run_app

from byol_tf import export
from byol_tf.convert import CENTRAL_FRACTION, IMAGE_SIZE, from_deepmind
from byol_tf.files import sha256_file, write_json
from byol_tf.image_encoder import ImageEncoder
from byol_tf.records import versions


def convert(checkpoint, out_dir, model_name=None, version=1):
    """Converts `checkpoint` and writes, under `out_dir`:
      encoder.keras (an `ImageEncoder`: uint8 images of any size → representation, the
      official centre crop 224/256 and bicubic resize inside), classifier.keras (images →
      logits), projector.keras, predictor.keras,
      saved_model/<model_name>/<version>/ (TF Serving: uint8 images or JPEG/PNG bytes →
      {"embedding", "logits"}, the same input),
      conversion.json (source sha256, step, architecture, versions).
    Refuses an existing `out_dir` that is not empty. Returns the `Converted`."""
    out = pathlib.Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out")
    converted = from_deepmind(checkpoint)
    arch = converted.architecture
    model_name = model_name or f"byol_res{arch['depth']}x{arch['width_multiplier']}"
    out.mkdir(parents=True, exist_ok=True)
    image_encoder = ImageEncoder(converted.encoder, converted.converter())
    saved = export.export_encoder(image_encoder, out / "saved_model" / model_name / str(version),
                                  classifier=converted.classifier)
    image_encoder.save(out / "encoder.keras")
    if converted.classifier is not None:
        classifier_model(converted, image_encoder).save(out / "classifier.keras")
    for name in ("projector", "predictor"):
        if getattr(converted, name) is not None:
            getattr(converted, name).save(out / f"{name}.keras")
    write_json(out / "conversion.json", dict(
        source=str(checkpoint), source_sha256=sha256_file(checkpoint), step=converted.step,
        kind=converted.kind, architecture=arch, saved_model=str(saved),
        files=sorted(p.name for p in out.glob("*.keras")), preprocessing=dict(
            input="uint8 RGB", central_fraction=CENTRAL_FRACTION, resize="bicubic",
            image_size=IMAGE_SIZE, normalisation="ImageNet mean/std"),
        versions=versions()))
    return converted


def classifier_model(converted, image_encoder):
    """keras.Model: uint8 images of any size → ImageNet logits (the image encoder's input)."""
    images = keras.Input((None, None, 3), dtype="uint8", name="images")
    return keras.Model(images, converted.classifier(image_encoder(images)),
                       name=f"{converted.encoder.name}_classifier")


def main(argv):
    del argv
    from absl import app

    from byol_tf.convert import ConversionError

    f = flags.FLAGS
    try:
        converted = convert(f.checkpoint, f.out, f.model_name, f.version)
    except FileExistsError as error:
        raise app.UsageError(f"--out: {error}") from None
    except (ConversionError, FileNotFoundError) as error:
        raise app.UsageError(f"--checkpoint={f.checkpoint}: {error}") from None
    logging.info("converted %s (step %s) → %s", converted.architecture, converted.step, f.out)


flags.DEFINE_string("checkpoint", None, "DeepMind BYOL checkpoint (.pkl)", required=True)
flags.DEFINE_string("out", None, "output folder (new or empty)", required=True)
flags.DEFINE_string("model_name", None, "TF Serving model name (default byol_res{depth}x{width})")
flags.DEFINE_integer("version", 1, "TF Serving model version")


def run():
    """The `byol-convert` command."""
    run_app(main, __name__, __doc__)


if __name__ == "__main__":
    run()
