"""The run folder: one home for what a run writes, and in which order.

A run is a sequence of phases, each recorded in `phases.json` when it completes (with its wall
`seconds`: from the end of the previous phase in the same process, or from the process's start,
so the train phase's include start-up):

    (validate the whole config — nothing is written before this succeeds)
    config.json → train → save → evaluate → export → publish

`train` is checkpointed (`byol_tf.training.checkpoints`); its per-epoch history, the training time
and the metrics of a half-done epoch are part of every checkpoint, so the history after any
number of resumes equals an uninterrupted run's. Every other phase writes its files under a
temporary name and renames them into place, then records itself; a rerun of the same
command skips the phases that are recorded and redoes the others. The training config (what
changes the weights) must match the folder's `config.json`; the evaluation, export and
publish options may change between reruns (e.g. add `--publish` to a finished run).
"""

import json
import pathlib
import time

import keras

from byol_tf import compat
from byol_tf.files import (atomic_path, content_sha256, hold_lock, release_lock, require_space,
                           write_json, write_text)
from byol_tf.records import host

PHASES = ("train", "save", "evaluate", "export", "publish")
WRITTEN_FOLDERS = (".", "checkpoints", "export/byol_encoder")  # where a run writes files
OWN_FOLDERS = ("checkpoints", "export", "zoo", "tensorboard")  # sub-folders a run makes


class RunFolder:
    """A run folder's records.

    Args:
      path: the run folder.
      is_chief: bool. Whether this process writes (False on non-chief workers). Defaults
        to True.
      started: the process's start (a `time.time()`), where the first phase's seconds count
        from. Defaults to now.
    """

    def __init__(self, path, is_chief=True, started=None):
        self.path, self.is_chief = pathlib.Path(path).expanduser(), is_chief
        self._last_finish = time.time() if started is None else started

    @property
    def config_path(self):
        return self.path / "config.json"

    @property
    def phases_path(self):
        return self.path / "phases.json"

    @property
    def export_path(self):
        """The encoder's SavedModel, as TF Serving loads it (model name, version 1)."""
        return self.path / "export" / "byol_encoder" / "1"

    def metrics(self):
        """`metrics.json` (history, kNN, seconds), or {} before the run wrote it."""
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def write_metrics(self, metrics):
        write_json(self.path / "metrics.json", metrics)

    def config_record(self):
        """`config.json` (config, versions, command), or None for a new folder."""
        if not self.config_path.exists():
            return None
        try:
            record = json.loads(self.config_path.read_text())
            record["config"]
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{self.config_path} is not a run record ({error}); "
                             "choose another run folder") from None
        return record

    def run_id(self):
        """A name for this run that does not depend on where its folder is: a hash of its
        recorded config and start time (None for a new folder)."""
        record = self.config_record()
        if record is None:
            return None
        import hashlib

        text = json.dumps([record["config"], record.get("started")], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def recorded_config(self):
        """The training config in `config.json`, or None for a new folder."""
        record = self.config_record()
        return None if record is None else record["config"]

    def check(self, config):
        """Raises ValueError when the folder holds a run with another training config (a
        `RunConfig`'s training fields) that trained (a config.json alone, of a run stopped
        before its first checkpoint, is replaced), or a trained one whose saved models are
        missing."""
        self.check_place()
        previous = self.recorded_config()
        changed = config.differences(previous) if previous is not None else []
        if changed and not self.untrained():
            raise ValueError(f"{self.path} holds a run with another config (differs in "
                             f"{changed}); rerun it with the same flags or choose another "
                             "run folder")
        if previous is None and (self.phases() or any(self.path.glob("checkpoints/ckpt-*"))):
            raise ValueError(f"{self.config_path} is missing from a run folder that holds a "
                             "run's records (phases.json or checkpoints): without it, what the "
                             "weights were trained with is unknown; restore the file or choose "
                             "another run folder")
        saved = self.done("save") or {}
        missing = [name for name in saved.get("files", []) if not (self.path / name).exists()]
        if missing:  # e.g. a published run whose folder kept only its records
            raise ValueError(f"{self.path} holds a trained run whose saved models are gone "
                             f"({', '.join(missing)}); to train again, choose another run folder")

    def check_place(self):
        """Raises ValueError when the folder cannot be a run's own: a file, the file system's
        root or the home folder, or a folder that holds another run (whose files this run's
        clean-up would touch)."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file, not a run folder; choose a folder")
        resolved = path.resolve()
        root = resolved == pathlib.Path(resolved.anchor)
        if root or resolved == pathlib.Path.home().resolve():
            raise ValueError(f"{path} is {'the file system root' if root else 'the home folder'}"
                             "; give each run a folder of its own")
        if not path.is_dir():
            return
        inside = [p.parent for pattern in ("*/config.json", "*/*/config.json")
                  for p in path.glob(pattern)
                  if p.parent.name not in OWN_FOLDERS and RunFolder(p.parent).holds_a_run()]
        if inside:
            raise ValueError(f"{path} holds another run folder ({inside[0]}); give this run a "
                             "folder of its own, beside it")

    def holds_a_run(self):
        """Whether the folder holds a run's records (config.json beside phases.json, a lock
        or checkpoints)."""
        return self.config_path.is_file() and any(
            (self.path / name).exists() for name in ("phases.json", ".lock", "checkpoints"))

    def lock(self):
        """Makes this process the folder's one writer (`files.hold_lock` on `<run>/.lock`);
        LockedError names the process already writing it."""
        if self.is_chief:
            hold_lock(self.path / ".lock", f"run folder {self.path}")
            self.clear_leftovers()

    def unlock(self):
        """Ends this process's hold on the folder (`lock`), its lock file removed."""
        if self.is_chief:
            release_lock(self.path / ".lock", remove=True)

    def clear_leftovers(self):
        """Removes what killed writers left (`files.partial_name` files and folders) where
        this run writes (not in sub-folders it does not own); only the lock's holder calls it,
        so no other writer's are among them."""
        import shutil

        for path in [p for folder in WRITTEN_FOLDERS for p in (self.path / folder).glob(
                ".*.partial-*")]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def untrained(self):
        """Whether nothing was trained or recorded in the folder (no checkpoint, no phase)."""
        return not self.phases_path.exists() and not any(self.path.glob("checkpoints/ckpt-*"))

    def start(self, config, command, versions):
        """Records the config (once: a resumed run keeps the first record; a run that never
        trained gives way to a new config)."""
        self.check(config)
        previous = self.recorded_config()
        if self.is_chief and (previous is None or (config.differences(previous)
                                                   and self.untrained())):
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.config_path, dict(config=config.record(), versions=versions,
                                              command=list(command), started=time.ctime()))

    def phases(self):
        """{phase: its record} for the completed phases of this run. Each record is bound to
        the run (its `run_id`) and to its own content (`record_sha256`): a record of another
        run, or one edited since, is not this run's, and it and every later phase are left out
        (redone), with a warning. Records written before the binding (byol_tf 0.1.0) are
        taken as they are."""
        if not self.phases_path.exists():
            return {}
        try:
            phases = json.loads(self.phases_path.read_text())
            if not isinstance(phases, dict) or not all(isinstance(v, dict)
                                                       for v in phases.values()):
                raise ValueError("not an object of phase records")
        except ValueError as error:
            raise ValueError(f"{self.phases_path} is damaged ({error}); delete it to redo the "
                             "phases after training (the checkpoints are kept), or choose "
                             "another run folder") from None
        run_id, kept = self.run_id(), {}
        for phase in [p for p in PHASES if p in phases]:
            record = phases[phase]
            legacy = "run_id" not in record and "record_sha256" not in record
            ours = record.get("run_id") == run_id
            if not legacy and not (ours and record.get("record_sha256") == content_sha256(
                    record, "record_sha256")):
                self._warn_once(phase, "edited since it was written" if ours else "another run's")
                break
            kept[phase] = record
        return kept

    def _warn_once(self, phase, why):
        from absl import logging

        warned = self.__dict__.setdefault("_warned", set())
        if phase not in warned:
            warned.add(phase)
            logging.warning("%s: the record of the %s phase is %s; it and the phases after it "
                            "are redone", self.phases_path, phase, why)

    def forget(self, phase):
        """Removes the record of `phase` and of every phase after it (they are redone)."""
        if self.is_chief:
            later = PHASES[PHASES.index(phase):]
            write_json(self.phases_path, {p: r for p, r in self.phases().items()
                                          if p not in later})

    def done(self, phase):
        """The record of `phase` if it completed, else None."""
        return self.phases().get(phase)

    def finish(self, phase, **record):
        """Records `phase` as complete (atomically), with `record` and its wall `seconds`."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; phases: {PHASES}")
        now = time.time()
        seconds, self._last_finish = round(now - self._last_finish, 1), now
        if self.is_chief:
            record = dict(record, seconds=seconds, time=time.ctime(), run_id=self.run_id())
            record["record_sha256"] = content_sha256(record, "record_sha256")
            write_json(self.phases_path, {**self.phases(), phase: record})

    def phase_seconds(self):
        """{phase: wall seconds} of the completed phases (as recorded by `finish`)."""
        return {phase: record.get("seconds") for phase, record in self.phases().items()}

    def save_keras(self, model, name):
        """`model.save(<run>/<name>)`, atomically."""
        from byol_tf.training.checkpoints import weights_bytes

        require_space(self.path, weights_bytes(model) + 2**20, name)
        with atomic_path(self.path / name) as tmp:
            model.save(tmp)
        return self.path / name

    def write_history_csv(self, history):
        """`history.csv`: one row per completed epoch (written whole, atomically)."""
        if not history or not self.is_chief:
            return
        keys = sorted({k for row in history for k in row})
        lines = [",".join(["epoch", *keys])]
        lines += [",".join([str(i), *(repr(row.get(k, "")) for k in keys)])
                  for i, row in enumerate(history)]
        write_text(self.path / "history.csv", "\n".join(lines) + "\n")

    def write_curves(self, history):
        """`curves.png`: the per-epoch history as pictures (`byol_tf.training.pictures`)."""
        if not history or not self.is_chief:
            return
        from byol_tf.training import pictures

        with atomic_path(self.path / "curves.png") as tmp:
            pictures.curves(history, tmp, title=self.path.name)


class RunHistory(keras.callbacks.Callback):
    """The train phase's own state, saved in every checkpoint (`state()`) and restored on a
    resume (`restore(state)`): the logs of each completed epoch, the training seconds so far,
    the segments (one per process that trained: its host's CPU, first and last step, seconds
    inside `fit`), and the metric trackers' values of a half-done epoch, so that the resumed
    epoch's logs equal an uninterrupted run's. Each epoch's throughput (images per second of
    this host, start-up excluded) is logged and kept apart from the history (`throughput`),
    which it would make differ between identical runs.

    Args:
      run: the `RunFolder` (its `history.csv` is rewritten after every epoch).
      batch_size: int or None. The global batch, for the throughput. Defaults to None.
    """

    def __init__(self, run, batch_size=None):
        super().__init__()
        self.batch_size, self.throughput, self._epoch_start = batch_size, {}, None
        self.run, self.epochs, self.seconds_before = run, [], 0.0
        self.segments_before, self._first_step = [], None
        self._started, self._metric_values = None, None
        self._seconds_here = 0.0  # inside `fit` in this process, finished calls

    def state(self):
        return dict(history=self.epochs, train_seconds=self.train_seconds,
                    segments=self.segments(), images_per_second=self.throughput,
                    metrics=[keras.ops.convert_to_numpy(v).tolist()
                             for v in self.model.metrics_variables])

    def segments(self):
        """[{cpu, cores, isa, first_step, last_step, train_seconds}]: the processes that
        trained this run, this one last (while it has trained)."""
        here = self._seconds_here + (time.time() - self._started if self._started else 0.0)
        if self.model is None or here == 0.0:
            return list(self.segments_before)
        last_step = self._step()
        return [*self.segments_before, dict(host(), first_step=self._first_step,
                                            last_step=last_step, train_seconds=round(here, 1))]

    def by_key(self):
        """{metric: [value of each completed epoch, None where not measured]} (the layout of
        metrics.json; e.g. a kNN measured every few epochs)."""
        keys = list(dict.fromkeys(k for row in self.epochs for k in row))
        return {k: [row.get(k) for row in self.epochs] for k in keys}

    def restore(self, state, mid_epoch):
        """Takes a checkpoint's state; `mid_epoch`: the checkpoint is inside an epoch, whose
        metric trackers are restored when that epoch resumes."""
        self.epochs = [dict(row) for row in state.get("history", [])]
        self.seconds_before = float(state.get("train_seconds", 0.0))
        self.segments_before = [dict(s) for s in state.get("segments", [])]
        self.throughput = dict(state.get("images_per_second", {}))
        self._metric_values = state.get("metrics") if mid_epoch else None

    @property
    def train_seconds(self):
        """Seconds inside `fit`, over this process and the ones it resumed from (up to their
        last checkpoint)."""
        running = time.time() - self._started if self._started is not None else 0.0
        return self.seconds_before + running

    def on_train_begin(self, logs=None):
        self._started = time.time()
        if self._first_step is None:
            self._first_step = self._step()

    def on_train_end(self, logs=None):
        self._seconds_here += time.time() - self._started
        self.seconds_before, self._started = self.train_seconds, None

    def _step(self):
        return compat.batch_count(self.model.optimizer)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = (time.time(), self._step())
        if self._metric_values is not None:
            for variable, value in zip(self.model.metrics_variables, self._metric_values):
                variable.assign(value)
            self._metric_values = None

    def on_epoch_end(self, epoch, logs=None):
        row = {k: float(keras.ops.convert_to_numpy(v).reshape(-1)[0]) for k, v in (logs or {}).items()}
        self.epochs = self.epochs[:epoch] + [row]
        if self.batch_size and self._epoch_start:
            started, first_step = self._epoch_start
            rate = (self._step() - first_step) * self.batch_size / max(time.time() - started, 1e-9)
            self.throughput[str(epoch + 1)] = round(rate, 1)
            if logs is not None:  # (after `row`: shown in the epoch's line and TensorBoard)
                logs["images_per_second"] = round(rate, 1)
        self.run.write_history_csv(self.epochs)
        self.run.write_curves(self.epochs)


class TimeLimit(keras.callbacks.Callback):
    """Stops training at the end of the first epoch after which another epoch of the same
    duration would end later than `seconds` after `started` (a `time.time()`), so that a
    long run goes in time-limited segments, each ending on an epoch's checkpoint.
    `stopped` tells whether it stopped the training."""

    def __init__(self, seconds, started):
        super().__init__()
        self.deadline, self.stopped, self._epoch_started = started + seconds, False, None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        if now + (now - self._epoch_started) > self.deadline:
            self.model.stop_training = self.stopped = True


class PlainProgress(keras.callbacks.Callback):
    """Training progress for a log file or a pipe: plain lines (no terminal codes), one at the
    end of each epoch with its metrics, and one within an epoch whenever `every` seconds
    passed without a line, the first step's compilation included (so that a log never goes
    quiet for long)."""

    def __init__(self, epochs, every=8.0):
        super().__init__()
        self.epochs, self.every = epochs, every
        self._started, self._last = None, time.time()  # (the last line printed)
        self._first_step = None  # set when the first step (its compilation) is done

    def on_train_begin(self, logs=None):
        import threading

        self._first_step = threading.Event()

        def while_compiling():  # the first step is one long call: said from a thread
            while not self._first_step.wait(0.5):
                if time.time() - self._last >= self.every:
                    self._last = time.time()
                    print("  compiling the training step…", flush=True)

        threading.Thread(target=while_compiling, daemon=True).start()

    def on_train_end(self, logs=None):
        if self._first_step is not None:
            self._first_step.set()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step is not None:
            self._first_step.set()
        now = time.time()
        if now - self._last >= self.every:
            steps = self.params.get("steps")
            print(f"  step {batch + 1}{f'/{steps}' if steps else ''} "
                  f"({now - self._started:.0f} s)", flush=True)
            self._last = now

    def on_epoch_end(self, epoch, logs=None):
        def plain(value):
            value = float(keras.ops.convert_to_numpy(value).reshape(-1)[0])
            return f"{value:.4g}"

        seconds = time.time() - self._started if self._started else 0.0
        metrics = " - ".join(f"{k}: {plain(v)}" for k, v in (logs or {}).items())
        print(f"Epoch {epoch + 1}/{self.epochs}: {seconds:.0f} s - {metrics}", flush=True)
        self._last = time.time()
