"""`byol-train` from a clone: pretrain, evaluate, export and publish (see byol_tf/cli/train.py)."""

import byol_tf_runtime

if __name__ == "__main__":
    byol_tf_runtime.train()
