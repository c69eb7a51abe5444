"""`byol-eval` from a clone: kNN, linear, fine-tune, semi-supervised (see byol_tf/cli/eval.py)."""

import byol_tf_runtime

if __name__ == "__main__":
    byol_tf_runtime.evaluate()
