"""`byol-eval` from a clone: kNN, linear, fine-tune, semi-supervised (see byol_tf/cli/eval.py)."""

from byol_tf.cli.eval import run

if __name__ == "__main__":
    run()
