"""`byol-train` from a clone: pretrain, evaluate, export and publish (see byol_tf/cli/train.py)."""

from byol_tf.cli.train import run

if __name__ == "__main__":
    run()
