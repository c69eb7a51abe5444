"""A run's config is resolved once (byol_tf.training.config): every flag of train.py ends up
in the recorded config as given, or is refused in one line; --image_size acts on fixed-size
sources; a run folder written by 0.1.0 still resumes."""

import json
import pathlib
import shutil

import keras
import pytest

import byol_tf
from byol_tf.data import SAMPLE_FILE
from byol_tf.training import config as run_config
from byol_tf.training import memory
from helpers.commands import train
from helpers.train_config import resolve_args

ROOT = pathlib.Path(__file__).resolve().parents[1]
RELEASE_RUN = ROOT / "tests" / "data" / "release_0_1_0" / "run"
REFUSED = object()
# Every flag of train.py, given a value that is not its default, on the bundled sample:
# (command-line argument, the recorded field, the value it must hold there, or REFUSED).
FLAG_CASES = {
    "dataset": (f"--dataset={SAMPLE_FILE} --batch_size=64", "dataset", str(SAMPLE_FILE)),
    "data_dir": ("--data_dir=/tmp/tfds", None, REFUSED),  # the sample is no TFDS dataset
    "split": ("--split=test", None, REFUSED),
    "skip_bad_images": ("--skip_bad_images", None, REFUSED),  # folders only
    "max_image_pixels": ("--max_image_pixels=1000", None, REFUSED),
    "eval_dataset": (f"--eval_dataset={ROOT}", None, REFUSED),  # the sample has a test split
    "recipe": ("--recipe=cifar10_cpu", "recipe", "cifar10_cpu"),
    "preset": ("--preset=cifar10_cpu", "recipe", "cifar10_cpu"),
    "encoder": ("--encoder=resnet10_cifar", "encoder", "resnet10_cifar"),
    "image_size": ("--image_size=64", "image_size", 64),
    "epochs": ("--epochs=3", "epochs", 3),
    "batch_size": ("--batch_size=64", "batch_size", 64),
    "base_lr": ("--base_lr=0.5", "base_lr", 0.5),
    "accumulation_steps": ("--accumulation_steps=2 --batch_size=64", "accumulation_steps", 2),
    "weight_decay": ("--weight_decay=0.0001", "weight_decay", 1e-4),
    "tau_base": ("--tau_base=0.9", "tau_base", 0.9),
    "warmup_epochs": ("--warmup_epochs=1", "warmup_epochs", 1),
    "optimizer": ("--optimizer=sgd", "optimizer", "sgd"),
    "hidden_dim": ("--hidden_dim=64", "hidden_dim", 64),
    "projection_dim": ("--projection_dim=32", "projection_dim", 32),
    "steps_per_epoch": ("--steps_per_epoch=5", "steps_per_epoch", 5),
    "seed": ("--seed=7", "seed", 7),
    "run_dir": ("--run_dir=/tmp/somewhere", "run_dir", "/tmp/somewhere"),
    "jit_compile": ("--jit_compile", "jit_compile", True),
    "knn": ("--noknn", "knn", False),
    "knn_random_init": ("--noknn_random_init", "knn_random_init", False),
    "knn_k": ("--knn_k=10", "knn_k", 10),
    "knn_every": ("--knn_every=2", "knn_every", 2),
    "max_eval_examples": ("--max_eval_examples=100", "max_eval_examples", 100),
    "strategy": ("--strategy=mirrored", "strategy", "mirrored"),
    "tpu": ("--tpu=local", None, REFUSED),  # without --strategy=tpu
    "precision": ("--precision=mixed_bfloat16", "precision", "mixed_bfloat16"),
    "deterministic": ("--deterministic", "deterministic", True),
    "checkpoint_every": ("--checkpoint_every=3", "checkpoint_every", 3),
    "time_limit_minutes": ("--time_limit_minutes=5", "time_limit_minutes", 5.0),
    "time_budget_minutes": ("--time_budget_minutes=5", "time_budget_minutes", 5.0),
    "keep_checkpoints": ("--keep_checkpoints=2", "keep_checkpoints", 2),
    "init_from": ("--init_from=byol_tiny_resnet_cifar10_sample", "init_from",
                  "byol_tiny_resnet_cifar10_sample"),
    "publish": ("--publish=demo", "publish", "demo"),
    "zoo_dir": ("--zoo_dir=/tmp/zoo", "zoo_dir", "/tmp/zoo"),
    "publish_linear_epochs": ("--publish_linear_epochs=3", "publish_linear_epochs", 3),
    "final_weights_npz": ("--final_weights_npz=/tmp/w.npz", "final_weights_npz", "/tmp/w.npz"),
    "method": ("--method=simclr", "method", "simclr"),
    "method_options": ('--method_options={"beta":0.5}', "method_options", {"beta": 0.5}),
}
# Values no run can take: each refused in one line naming its flag.
BAD_VALUES = ["--base_lr=nan", "--base_lr=inf", "--base_lr=0", "--weight_decay=-1",
              "--checkpoint_every=0", "--knn_every=-1", "--knn_k=0", "--keep_checkpoints=0",
              "--max_image_pixels=-1", "--steps_per_epoch=0", "--steps_per_epoch=-1",
              "--seed=-1", "--max_eval_examples=0", "--time_limit_minutes=0", "--epochs=0",
              "--time_budget_minutes=-1", "--epochs=3 --time_budget_minutes=5",
              "--accumulation_steps=0", "--batch_size=100 --accumulation_steps=3",
              "--method=moco --accumulation_steps=2",
              "--tau_base=1.5", "--recipe=nope", "--encoder=nope",
              "--noknn --knn_every=1", "--preset=sample --recipe=cifar10_cpu",
              "--zoo_dir=/etc/passwd", "--dataset=sample --eval_dataset=/tmp"]


def flags_module():
    from absl import flags

    import byol_tf.cli.train as train_cli

    return flags.FLAGS, train_cli.__name__


def resolved(*args, host=None):
    """(RunConfig, notes) of train.py's arguments, as train.py resolves them; the method's
    options are checked by building it."""
    from byol_tf.training import build

    config, notes = resolve_args(*args, host=host)
    build.build_method(config, byol_tf.encoders.get("tiny_resnet_cifar"), 10, 10)  # its options
    return config, notes


def test_every_flag_is_recorded_as_given_or_refused_in_one_line():
    flags, module = flags_module()
    defined = {f.name for f in flags.get_flags_for_module(module)}
    assert defined == set(FLAG_CASES)  # a new flag needs its case here
    for name, (argument, field, expected) in FLAG_CASES.items():
        if expected is REFUSED:
            with pytest.raises(run_config.ConfigError) as refused:
                resolved(*argument.split())
            message = str(refused.value)
            assert "\n" not in message and f"--{name}" in message, (name, message)
            continue
        config, notes = resolved(*argument.split())
        record = json.loads(json.dumps(config.record()))  # (as config.json holds it)
        assert record[field] == expected, (name, record[field])
        if name == "preset":
            assert any("--preset is now --recipe" in note for note in notes)
    for arguments in BAD_VALUES:
        with pytest.raises(run_config.ConfigError) as refused:
            resolved(*arguments.split())
        message = str(refused.value)
        flag = arguments.split()[-1].split("=")[0]
        assert "\n" not in message and flag in message, (arguments, message)


def test_the_config_is_frozen_and_training_fields_decide_a_resume():
    config, _ = resolved("--epochs=5")
    with pytest.raises(AttributeError):
        config.epochs = 3
    other, _ = resolved("--epochs=5", "--time_limit_minutes=3", "--knn_k=5")
    assert other.differences(config.record()) == []  # this command's options may change
    assert resolved("--epochs=6")[0].differences(config.record()) == ["epochs", "total_steps"]


def test_image_size_acts_on_a_fixed_size_source(cifar10_dir):
    config, _ = resolved("--dataset=cifar10", f"--data_dir={cifar10_dir / 'tfds'}",
                         "--image_size=64")
    assert config.image_size == 64 and config.source().image_side == 32
    assert resolved(f"--data_dir={cifar10_dir / 'tfds'}", "--dataset=cifar10")[0].image_size == 32


def test_the_memory_estimate_is_the_one_of_the_image_size_trained():
    # A machine with room for the step at 32 px but not at 64 px refuses --image_size=64 on
    # the 32-px sample, naming 64, and keeps the batch at 32 px.
    sample = resolved("--batch_size=128", "--recipe=sample")[0].record()
    sizes = {side: memory.model_size(dict(sample, image_size=side)) for side in (32, 64)}
    room = (memory.step_bytes(128, *sizes[32]) + memory.step_bytes(128, *sizes[64])) / 2 / 0.9
    with pytest.raises(run_config.ConfigError, match="--image_size=64"):
        resolved("--image_size=64", "--batch_size=128", "--recipe=sample",
                 host=run_config.Host(available_bytes=room))
    assert resolved("--batch_size=128", "--recipe=sample",
                    host=run_config.Host(available_bytes=room))[0].batch_size == 128


def test_train_py_trains_64_px_views_of_the_32_px_sample(tmp_path):
    run_dir = tmp_path / "run"
    done = train("--image_size=64", "--epochs=1", "--steps_per_epoch=2", "--batch_size=32",
                 "--hidden_dim=32", "--projection_dim=16", "--noknn", f"--run_dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "config.json").read_text())["config"]["image_size"] == 64
    model = keras.models.load_model(run_dir / "byol.keras")
    assert model.image_size == model.augmenter.image_size == 64
    views = model.augmenter(byol_tf.data.load_sample()["x_test"][:2])
    assert tuple(views[0].shape) == (2, 64, 64, 3)
    assert keras.models.load_model(run_dir / "encoder.keras").image_size == 64


def test_a_refused_flag_exits_2_with_one_line_and_writes_nothing(tmp_path):
    done = train("--split=test", f"--run_dir={tmp_path / 'run'}", timeout=300)
    assert done.returncode == 2 and not (tmp_path / "run").exists()
    assert len(done.stderr.strip().splitlines()) == 1 and "--split" in done.stderr


def test_a_run_folder_written_by_0_1_0_resumes_and_finishes(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(RELEASE_RUN, run_dir)
    recorded = (run_dir / "config.json").read_bytes()
    command = json.loads(recorded)["command"]
    arguments = [a for a in command[1:] if not a.startswith(("--run_dir", "--time_limit"))]
    done = train(*arguments, f"--run_dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 2 and metrics["final_step"] == 4
    assert (run_dir / "config.json").read_bytes() == recorded  # never rewritten
    changed = train(*arguments, "--epochs=3", f"--run_dir={run_dir}", timeout=300)
    assert changed.returncode == 2 and "another config (differs in ['epochs'" in changed.stderr
