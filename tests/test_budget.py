"""--time_budget_minutes (byol_tf.training.budget): the plan fills the budget and no more,
the planned steps become the config's epochs and schedules, a resumed budgeted run keeps its
recorded steps and measures nothing, and the measurement does not touch the run's weights."""

import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from byol_tf.training import budget
from byol_tf.training import config as run_config
from helpers.commands import ENV, ROOT, train
from helpers.train_config import resolve_args


def cost(steps, step, first, epoch_seconds, per_pass):
    """The plan's model of training `steps` steps, written out independently."""
    return first + steps * step + math.ceil(steps / per_pass) * epoch_seconds


def test_the_plan_takes_the_most_steps_that_fit():
    rng = np.random.default_rng(0)
    for _ in range(500):
        budget_s, spent, after = rng.uniform(60, 7200), rng.uniform(0, 30), rng.uniform(0, 60)
        step, first = rng.uniform(0.01, 2.0), rng.uniform(0, 20)
        epoch_s, per_pass = rng.uniform(0, 3), int(rng.integers(1, 200))
        left = budget.SAFETY * budget_s - spent - after
        try:
            steps = budget.plan(budget_s, spent, step, first, after, epoch_s, per_pass)
        except budget.BudgetTooSmall as error:
            assert cost(1, step, first, epoch_s, per_pass) > left
            assert "give at least" in str(error)
            continue
        assert cost(steps, step, first, epoch_s, per_pass) <= left + 1e-9
        assert cost(steps + 1, step, first, epoch_s, per_pass) > left
    # By hand: 100 s (95 with the safety margin), 10 spent, 20 after, the first step 5 s
    # longer: 60 s for steps of 0.5 s and epochs of 10 steps costing 1 s more each.
    # 100 steps: 50 + 10 = 60 s; 101 steps: 50.5 + 11 = 61.5 s.
    assert budget.SAFETY == 0.95
    assert budget.plan(100, 10, 0.5, 5, 20, 1.0, 10) == 100


def test_planned_steps_become_whole_epochs_of_at_most_a_pass():
    assert budget.epochs_of(64, 7) == (9, 7)      # whole passes: 63 steps
    assert budget.epochs_of(13, 7) == (2, 6)      # two shorter epochs: 12 > one pass's 7
    assert budget.epochs_of(5, 7) == (1, 5)       # less than a pass
    for steps in range(1, 400):
        for per_pass in (1, 3, 7, 62):
            epochs, per_epoch = budget.epochs_of(steps, per_pass)
            assert 1 <= per_epoch <= per_pass and epochs * per_epoch <= steps
            assert epochs * per_epoch > steps - max(epochs, per_pass)


def resolved(*args, **kwargs):
    return resolve_args(*args, **kwargs)[0]


def test_the_budget_sizes_the_schedules_and_a_resume_keeps_them():
    decision = dict(steps=40, step_seconds=0.1)
    config = resolved("--time_budget_minutes=3", "--batch_size=128", budget=decision)
    # The sample: 2,000 images → 15 steps a pass; 40 steps → 2 whole passes (30) or 3 epochs
    # of 13 (39): the latter.
    assert (config.epochs, config.steps_per_epoch, config.total_steps) == (3, 13, 39)
    assert config.checkpoint_every == 13 and config.budget == decision
    assert 0 <= config.warmup_steps < config.total_steps
    # A resume: the recorded decision is kept (whatever a measurement would say now).
    record = json.loads(json.dumps(config.record()))
    again = resolved("--time_budget_minutes=3", "--batch_size=128", previous=record,
                     budget=dict(steps=400))
    assert again.differences(record) == [] and again.budget == decision
    # The same folder with another budget, or none, is refused, naming the flag.
    for args in (["--time_budget_minutes=4"], []):
        with pytest.raises(run_config.ConfigError, match="time_budget_minutes=3"):
            resolved(*args, "--batch_size=128", previous=record)
    for other in ("--epochs=3", "--time_limit_minutes=2", "--steps_per_epoch=4"):
        with pytest.raises(run_config.ConfigError, match=other.split("=")[0]):
            resolved("--time_budget_minutes=3", other)


def _kill_after_first_checkpoint(args, run_dir):
    process = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        if list((run_dir / "checkpoints").glob("ckpt-*.json")):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    return process.wait(), process.stdout.read()


def test_a_budgeted_run_resumes_with_its_steps_and_equals_an_epochs_run(tmp_path):
    """Killed after its first epoch and rerun, a budgeted run keeps the steps it planned
    (nothing is measured again), and ends with the weights of an unbudgeted run of the
    recorded epochs: the measurement's throw-away model touches nothing of the run."""
    run_dir = tmp_path / "budgeted"
    common = ["--batch_size=32", "--image_size=16", "--hidden_dim=32", "--projection_dim=16",
              "--deterministic", "--noknn"]
    args = [*common, "--time_budget_minutes=0.8", f"--run_dir={run_dir}",
            f"--final_weights_npz={tmp_path / 'budgeted.npz'}"]
    status, first = _kill_after_first_checkpoint(args, run_dir)
    assert status == -signal.SIGKILL, first[-3000:]
    assert "Measuring this machine for the 0.8-minute budget" in first
    config = json.loads((run_dir / "config.json").read_text())["config"]
    planned = config["budget"]
    assert planned["steps"] >= config["total_steps"] > config["steps_per_epoch"]
    assert planned["planned_seconds"] <= 0.8 * 60
    resumed = train(*args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Measuring" not in resumed.stdout and "Resumed from checkpoint" in resumed.stdout
    assert json.loads((run_dir / "config.json").read_text())["config"]["budget"] == planned
    plain = train(*common, f"--epochs={config['epochs']}",
                  f"--steps_per_epoch={config['steps_per_epoch']}",
                  f"--run_dir={tmp_path / 'plain'}",
                  f"--final_weights_npz={tmp_path / 'plain.npz'}")
    assert plain.returncode == 0, plain.stderr[-3000:]
    got, want = np.load(tmp_path / "budgeted.npz"), np.load(tmp_path / "plain.npz")
    assert int(got["step"]) == config["total_steps"] == int(want["step"])
    assert sorted(got.files) == sorted(want.files)
    for name in want.files:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
