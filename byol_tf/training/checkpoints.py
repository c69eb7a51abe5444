"""Checkpoints that survive a kill: atomic, verified, the last N kept.

A checkpoint at global step k is two files in `directory`:
  ckpt-<k>.weights.h5  everything `model.save_weights` writes (online, target, BN
                       statistics, probe, optimizer slots and step counter)
  ckpt-<k>.json        manifest: step, sha256 and size of the weights file, the
                       augmentation RNG state (not in `save_weights`), time
Both are written to temporary names and renamed (the manifest last), so a crash leaves
either a complete checkpoint or none; nothing good is ever overwritten. `restore` takes
the newest checkpoint whose file matches its manifest and logs each one it skips.
Under a multi-worker strategy every worker calls `save` (as Keras requires); only the
chief's copy lands in `directory`, the others write to a temporary folder they delete.
"""

import json
import pathlib
import re
import shutil
import tempfile
import time

import keras
import numpy as np
from absl import logging

from byol_tf import compat
from byol_tf.files import atomic_path, content_sha256, require_space, sha256_file, write_text

_NAME = re.compile(r"^ckpt-(\d+)\.json$")



def weights_bytes(model):
    """Bytes of all the model's variables (weights, statistics, optimizer slots)."""
    optimizer = getattr(model, "optimizer", None)
    variables = list(model.weights) + (list(optimizer.variables) if optimizer else [])
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)


MANIFEST_KEYS = {"step", "sha256", "bytes", "seed_state"}


def _manifest_hash(manifest):
    """sha256 of a manifest's canonical JSON, without its own hash (checkpoints written
    before 0.2 have none, and are verified by their weights' hash alone)."""
    return content_sha256(manifest, "manifest_sha256")


class CheckpointManager:
    """Verified, atomic checkpoints of a model in one folder.

    Args:
      directory: path of the checkpoint folder (created on the first save).
      keep: int ≥ 1. How many of the newest checkpoints are kept. Defaults to 3.
      is_chief: bool. Whether this process writes (False on non-chief workers). Defaults
        to True.
    """

    def __init__(self, directory, keep=3, is_chief=True):
        if keep < 1:
            raise ValueError(f"keep must be ≥ 1; got {keep}")
        self.directory, self.keep, self.is_chief = pathlib.Path(directory), keep, is_chief
        self.last_saved_step = None  # by this process (every worker saves, the chief keeps)

    def steps(self):
        """Steps of the checkpoints with a manifest, newest first."""
        if not self.directory.exists():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def save(self, model, step, state=None):
        """Writes checkpoint `step`; `state` (JSON-able, e.g. the run's history) goes into
        its manifest and comes back as `self.state` after `restore`."""
        self.last_saved_step = int(step)
        target = self.directory if self.is_chief else pathlib.Path(tempfile.mkdtemp())
        target.mkdir(parents=True, exist_ok=True)
        weights = target / f"ckpt-{step}.weights.h5"
        require_space(target, weights_bytes(model) + 2**20, f"checkpoint {step}")
        with atomic_path(weights) as tmp:
            model.save_weights(tmp)
            manifest = dict(step=int(step), sha256=sha256_file(tmp), bytes=tmp.stat().st_size,
                            seed_state=[int(x) for x in model.seed_generator.state.numpy()],
                            time=time.time(), state=state or {})
        manifest["manifest_sha256"] = _manifest_hash(manifest)
        write_text(target / f"ckpt-{step}.json", json.dumps(manifest))
        if not self.is_chief:
            shutil.rmtree(target, ignore_errors=True)
            return None
        for old in self.steps()[self.keep:]:
            for path in (self.directory / f"ckpt-{old}.json",
                         self.directory / f"ckpt-{old}.weights.h5"):
                path.unlink(missing_ok=True)
        return weights

    def verify(self, step):
        """None if checkpoint `step` is intact, else what is wrong with it."""
        manifest_path = self.directory / f"ckpt-{step}.json"
        weights = self.directory / f"ckpt-{step}.weights.h5"
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as error:
            return f"unreadable manifest ({error})"
        if not isinstance(manifest, dict) or not MANIFEST_KEYS <= set(manifest):
            return f"damaged manifest (not an object with {sorted(MANIFEST_KEYS)})"
        if manifest["step"] != step:
            return f"manifest of step {manifest['step']}, not {step}"
        if "manifest_sha256" in manifest and manifest["manifest_sha256"] != _manifest_hash(manifest):
            return "manifest sha256 mismatch (edited or damaged)"
        if not weights.exists():
            return "weights file missing"
        if weights.stat().st_size != manifest.get("bytes"):
            return f"size {weights.stat().st_size} != {manifest.get('bytes')} (truncated?)"
        if sha256_file(weights) != manifest.get("sha256"):
            return "sha256 mismatch (corrupt or tampered)"
        return None

    def restore(self, model):
        """Loads the newest intact checkpoint into the compiled `model`; returns its step,
        or 0 when there is none (its saved `state` is then in `self.state`). Corrupt
        checkpoints are logged and skipped."""
        self.state = {}
        for step in self.steps():
            problem = self.verify(step)
            if problem:
                logging.warning("Checkpoint %s is unusable: %s; trying the one before.",
                                self.directory / f"ckpt-{step}.weights.h5", problem)
                continue
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            manifest = json.loads((self.directory / f"ckpt-{step}.json").read_text())
            try:  # (e.g. another model's checkpoint: its weights do not fit this one)
                model.load_weights(self.directory / f"ckpt-{step}.weights.h5")
                model.seed_generator.state.assign(manifest["seed_state"])
            except (ValueError, KeyError, TypeError, OSError) as error:
                logging.warning("Checkpoint %s does not load into this model: %s; trying the "
                                "one before.", self.directory / f"ckpt-{step}.weights.h5",
                                str(error)[:300])
                continue
            self.state = manifest.get("state", {})
            print(f"Resumed from checkpoint {self.directory / f'ckpt-{step}.weights.h5'} "
                  f"(step {step}).")
            return step
        return 0


class SaveEvery(keras.callbacks.Callback):
    """Keras callback: `manager.save(model, step, state())` every `every` optimizer steps
    while `healthy()`.

    A step that ends an epoch (a multiple of `steps_per_epoch`) is saved at the epoch's
    end, after the callbacks listed before this one have recorded the epoch (`state`, e.g.
    `byol_tf.training.run_folder.RunHistory.state`, then holds it)."""

    def __init__(self, manager, every, steps_per_epoch=None, state=None, healthy=None):
        super().__init__()
        self.manager, self.every = manager, every
        self.steps_per_epoch, self.state = steps_per_epoch, state or (lambda: None)
        self.healthy = healthy or (lambda: True)  # (False: weights not worth keeping)

    def _step(self):
        if hasattr(self.model, "jax_state_sync"):  # JAX: the variables are held by `fit`
            self.model.jax_state_sync()
        return compat.batch_count(self.model.optimizer)

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        at_epoch_end = self.steps_per_epoch and step % self.steps_per_epoch == 0
        if step % self.every == 0 and not at_epoch_end and self.healthy():
            self.manager.save(self.model, step, self.state())

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if (self.steps_per_epoch and step % self.every == 0 and step % self.steps_per_epoch == 0
                and self.healthy()):
            self.manager.save(self.model, step, self.state())
