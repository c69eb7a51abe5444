"""`--time_budget_minutes`: a run sized to the minutes it is given.

The run measures this machine on its own data and model before it starts — the first step (the
step's compilation), the steady step, the evaluation's forward pass — and plans how many
optimizer steps fit so that training, evaluation, saving, export (and a publish) end within the
budget, counted from the process's start. Every schedule (LR warm-up and cosine, τ) is then
sized to those steps (`config.resolve(budget=…)`), and the decision is recorded in
`config.json` ("budget"): a resumed run keeps its recorded steps and measures nothing.

The measurement trains a throw-away copy of the model (its steps are not part of the run), so
a budgeted run's weights are those of an unbudgeted run with the recorded epochs and steps
per epoch.
"""

import gc
import math
import time

import keras

# Seconds after training that do not scale with the data: two `.keras` files, the
# SavedModel export, the pictures, metrics and the process's exit (measured on 2 cores:
# save 0.3 s, export 1.7 s, evaluation's fixed part ~1 s; doubled for slower disks).
FIXED_SECONDS = 8.0
# Seconds each epoch adds to its steps: its checkpoint, history.csv, curves.png, TensorBoard.
EPOCH_SECONDS = 0.6
# The steady step is timed over this share of the budget (at least MIN_TIMED_STEPS steps, at
# most MAX_TIMED_SECONDS): long enough to drain the input pipeline's prefetch buffers.
TIMED_SHARE, MIN_TIMED_STEPS, MAX_TIMED_SECONDS = 0.03, 5, 30.0
# The run aims to end this far inside its budget: in-run steps ran up to 6% slower than the
# measured ones (bench/results/budget_curve_cifar10_folder.md).
SAFETY = 0.95


class BudgetTooSmall(ValueError):
    """Not even one epoch's step fits in the budget; the message says what would."""


def training_seconds(steps, step_seconds, first_step_seconds=0.0, epoch_seconds=0.0,
                     steps_per_pass=None):
    """Seconds of training `steps` optimizer steps in ⌈steps / steps_per_pass⌉ epochs:
    first + steps · step + epochs · epoch_seconds (no epoch cost without `steps_per_pass`)."""
    epochs = math.ceil(steps / steps_per_pass) if steps_per_pass else 0
    return first_step_seconds + steps * step_seconds + epochs * epoch_seconds


def plan(budget_seconds, spent_seconds, step_seconds, first_step_seconds, after_seconds,
         epoch_seconds=EPOCH_SECONDS, steps_per_pass=None):
    """The optimizer steps a run can take and still end within its budget.

    Training `S` steps costs `training_seconds(S, …)`; it must fit in
    `SAFETY · budget_seconds − spent_seconds − after_seconds`.

    Args:
      budget_seconds: the whole run's budget, from the process's start.
      spent_seconds: seconds already gone (start-up, reading data, the measurement).
      step_seconds: one steady optimizer step.
      first_step_seconds: the extra seconds of the run's first step (its compilation).
      after_seconds: evaluation, saving, export (and publish) after training.
      epoch_seconds: seconds each epoch adds (checkpoint, records).
      steps_per_pass: steps of one pass over the data (None: no epoch cost is counted).
    Returns the number of steps (≥ 1). Raises BudgetTooSmall when not one step fits.
    """
    left = SAFETY * budget_seconds - spent_seconds - after_seconds
    per_step = step_seconds + (epoch_seconds / steps_per_pass if steps_per_pass else 0.0)
    steps = math.floor(max(left - first_step_seconds, 0.0) / per_step)
    # The estimate counts epochs fractionally; the last epoch's cost is whole.
    while steps > 0 and training_seconds(steps, step_seconds, first_step_seconds,
                                         epoch_seconds, steps_per_pass) > left:
        steps -= 1
    if steps < 1:
        need = (spent_seconds + after_seconds + first_step_seconds + step_seconds
                + epoch_seconds) / SAFETY
        raise BudgetTooSmall(
            f"{budget_seconds / 60:g} minutes leave no time to train on this machine: "
            f"{spent_seconds:.0f} s went to starting and measuring, the first step takes "
            f"{first_step_seconds + step_seconds:.0f} s and evaluation, saving and export "
            f"about {after_seconds:.0f} s; give at least {math.ceil(need / 60 * 10) / 10:g} "
            "minutes")
    return steps


def epochs_of(steps, steps_per_pass):
    """(epochs, steps per epoch) for `steps` planned steps, whose product is as close to
    `steps` as it can be without passing it: whole passes (⌊steps / pass⌋ of them), or
    ⌈steps / pass⌉ epochs of a little less than a pass (the data stream is endless, so an
    epoch need not be a whole pass), whichever trains more; whole passes on a tie."""
    whole = (steps // steps_per_pass, steps_per_pass)
    epochs = max(1, math.ceil(steps / steps_per_pass))
    shorter = (epochs, max(1, min(steps_per_pass, steps // epochs)))
    return whole if whole[0] * whole[1] >= shorter[0] * shorter[1] else shorter


class StepTimer(keras.callbacks.Callback):
    """Times a `fit`'s steps: `first` (seconds to the end of the first step, its
    compilation included) and the steady steps after `warm` steps, stopping the fit once
    `seconds` of steady steps (and at least `min_steps`) are timed."""

    def __init__(self, seconds, min_steps=MIN_TIMED_STEPS, warm=2):
        super().__init__()
        self.seconds, self.min_steps, self.warm = seconds, min_steps, warm
        self.first, self.steady_steps, self.steady_seconds = None, 0, 0.0

    def on_train_begin(self, logs=None):
        self._begin = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch == 0:
            self.first = now - self._begin
        if batch + 1 == self.warm:
            self._steady_from = now
        elif batch + 1 > self.warm:
            self.steady_steps = batch + 1 - self.warm
            self.steady_seconds = now - self._steady_from
            if self.steady_steps >= self.min_steps and self.steady_seconds >= self.seconds:
                self.model.stop_training = True

    @property
    def step_seconds(self):
        return self.steady_seconds / max(self.steady_steps, 1)


def measure(build_model, dataset, budget_seconds, forward_images=None):
    """Measures a run on this machine with a throw-away model (`build_model()`: the run's
    model, compiled): its first step and steady step on `dataset` (the run's stream), and —
    given `forward_images` (uint8 `[N, S, S, 3]`, e.g. the evaluation's) — the evaluation's
    forward pass: the seconds of its first batch (its trace) and of one image after.
    Returns a dict of seconds."""
    from byol_tf import evaluation

    model = build_model()
    timer = StepTimer(min(MAX_TIMED_SECONDS, TIMED_SHARE * budget_seconds))
    model.fit(dataset, epochs=1, steps_per_epoch=100_000, callbacks=[timer], verbose=0,
              shuffle=False)
    measured = dict(first_step_seconds=round(max(timer.first - timer.step_seconds, 0.0), 3),
                    step_seconds=round(timer.step_seconds, 5), timed_steps=timer.steady_steps)
    if forward_images is not None and len(forward_images):
        encoder = model.image_encoder()
        images = forward_images[:512]
        started = time.perf_counter()
        evaluation.extract_features(encoder, images[:256])
        first = time.perf_counter() - started
        started = time.perf_counter()
        evaluation.extract_features(encoder, images)
        per_image = (time.perf_counter() - started) / len(images)
        measured.update(forward_trace_seconds=round(max(first - 256 * per_image, 0.0), 3),
                        forward_image_seconds=round(per_image, 7))
    del model
    keras.backend.clear_session()  # the run's model gets the names a resumed run's has
    gc.collect()
    return measured


def evaluation_pass_seconds(measured, images):
    """Seconds of one kNN evaluation's forward pass over `images` images (trace included)."""
    if "forward_image_seconds" not in measured:
        return 0.0
    return measured["forward_trace_seconds"] + measured["forward_image_seconds"] * images


def after_training_seconds(measured, train_images, test_images, knn_passes,
                           publish_linear_epochs=None, read_seconds=0.0):
    """Seconds after training: `knn_passes` forward passes over the evaluation images (the
    kNN of the trained encoder, of the same encoder at random init, of the entry it started
    from); a publish's (its data read again, `read_seconds`, its kNN pass and a linear
    evaluation of `publish_linear_epochs` cropped passes over the training images, ~1.5× a
    pass each); the fixed part. Without a measured forward pass, only the fixed part."""
    one_pass = evaluation_pass_seconds(measured, train_images + test_images)
    seconds = FIXED_SECONDS + knn_passes * one_pass
    if publish_linear_epochs and one_pass:
        seconds += read_seconds + one_pass + 1.5 * publish_linear_epochs * (
            measured["forward_image_seconds"] * train_images)
    return seconds
