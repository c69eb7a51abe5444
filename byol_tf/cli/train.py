"""Pretrain BYOL (or SimCLR, MoCo v2, the multi-view objective), evaluate the encoder with
kNN against itself at random init, save.

    byol-train                                   # embedded default: bundled CIFAR-10 sample
    byol-train --dataset=cifar10 --data_dir=~/.cache/byol_data/tfds
    byol-train --dataset=/path/to/images --image_size=224 --epochs=100
    byol-train --method=moco --method_options='{"queue_size": 4096}'
    byol-train --method_options='{"use_predictor": false}'      # a BYOL ablation

(`byol-train` is installed with the package; `python train.py` in a clone is the same program.)
Every flag left unset comes from the dataset's recipe (`byol_tf.training.recipes`); the whole
config is resolved once before anything is written (`byol_tf.training.config`). The run
folder gets: config.json (the resolved config, library versions, the command), metrics.json (history,
kNN), history.csv, tensorboard/, checkpoints/ (the last --keep_checkpoints, each epoch by
default), byol.keras (the whole model with optimizer state), encoder.keras (a
`byol_tf.ImageEncoder`: uint8 images of any size → embedding, the online encoder behind its
input contract) and export/byol_encoder/1/ (the same as a SavedModel for TF Serving,
byol_tf.export). Started again with the same --run_dir and flags, an unfinished run resumes
from its newest intact checkpoint, at the exact step (data stream, τ, LR, RNG included);
--time_limit_minutes=M stops such a run at an epoch's end within M minutes, so a long run goes
in segments (each process's host, steps and seconds are kept in the checkpoints and
metrics.json's "segments"). The same program trains on the JAX backend (KERAS_BACKEND=jax);
its export and publish then run when the command is repeated on the TensorFlow backend.
The phases themselves are `byol_tf.training.trainer`.
"""

import errno
import sys
import time

from absl import app, flags

from byol_tf.cli import fail, run_app

# The process's start (start-up counts: the train phase's seconds include it): the command's
# entry point (byol_tf_runtime) records it before TensorFlow loads.
PROCESS_STARTED = getattr(sys.modules.get("byol_tf_runtime"), "STARTED", time.time())

flags.DEFINE_string("dataset", "sample", "'sample' (bundled), a TFDS name (cifar10, cifar100, "
                    "stl10, imagenet2012) or a folder of images.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (downloads are off).")
flags.DEFINE_bool("skip_bad_images", False, "Image folders: leave out (and count) files that "
                  "are not readable images instead of stopping with their names.")
flags.DEFINE_string("split", None, "Pretraining split (default: the dataset's training split).")
flags.DEFINE_string("recipe", None, "Training recipe from byol_tf.training.recipes (default: by "
                    "dataset; a folder's is sized to it and to the machine).")
flags.DEFINE_string("preset", None, "The old name of --recipe (still accepted, with a notice).")
flags.DEFINE_string("encoder", None, "Encoder architecture from byol_tf.encoders.ARCHITECTURES.")
flags.DEFINE_integer("image_size", None, "Side of the augmented views, pixels (cropped from the "
                     "images and resized to it; default: a fixed-size dataset's own side, or the "
                     "recipe's).")
flags.DEFINE_integer("epochs", None, "Pretraining epochs.")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_integer("accumulation_steps", 1, "Gradient accumulation: each optimizer step "
                     "takes the mean gradient of N micro-batches of batch_size/N (batch norm "
                     "per micro-batch); the LR, tau and every count of steps are optimizer "
                     "steps. A small machine trains with a large --batch_size this way.")
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
flags.DEFINE_float("time_budget_minutes", None, "Size the run to end within M minutes (from "
                   "the command's start, evaluation and export included): it measures this "
                   "machine's step, then sets the steps and sizes every schedule to them "
                   "(instead of --epochs); recorded, and kept when the run resumes.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept; a corrupt newest one falls back.")
flags.DEFINE_integer("max_image_pixels", 40_000_000, "Image folders: files of more pixels are "
                     "unreadable (named, or left out with --skip_bad_images), before decoding.")
flags.DEFINE_string("init_from", None, "Start the encoders from this zoo entry (a name, a "
                    "folder or a file://, https:// or gs:// URL of one) and go on training on "
                    "--dataset: adapt a pretrained encoder to your images. Its architecture is "
                    "used; a published run's card names it as the parent.")
flags.DEFINE_string("publish", None, "After training, publish the encoder as this zoo entry "
                    "(byol_tf.training.publish: kNN + linear eval, model card).")
flags.DEFINE_string("zoo_dir", None, "Where --publish writes (default <run_dir>/zoo; models/ is the repo's zoo).")
flags.DEFINE_integer("publish_linear_epochs", 20, "Linear-evaluation epochs for --publish.")
flags.DEFINE_string("final_weights_npz", None, "Also write all final weights here (every worker).")
flags.DEFINE_enum("method", None, ["byol", "simclr", "moco", "multiview"],
                  "Self-supervised method (byol_tf.BYOL, SimCLR, MoCo, MultiView); default: "
                  "the recipe's (byol; simclr for a folder on a machine without a GPU).")
flags.DEFINE_string("method_options", "{}", "JSON object of the method's constructor arguments, "
                    "e.g. '{\"beta\": 0.5}' or '{\"temperature\": 0.5}' (see README, Methods).")
FLAGS = flags.FLAGS


def main(argv):
    del argv  # (flags only; the command is recorded from sys.argv)
    from byol_tf.training import trainer
    from byol_tf.training.config import ConfigError
    from byol_tf.training.divergence import Diverged

    given = {flag.name for flag in FLAGS.get_flags_for_module(__name__) if flag.present}
    try:
        trainer.run(FLAGS, sys.argv, PROCESS_STARTED, given=given)
    except ConfigError as error:
        raise app.UsageError(str(error)) from None
    except Diverged as error:
        fail(str(error), status=1)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        fail(f"{error.strerror}; free some space and run the same command again (what was "
             "saved so far is kept)", status=1)


def run():
    """The `byol-train` command."""
    run_app(main, __name__, __doc__)


if __name__ == "__main__":
    run()
