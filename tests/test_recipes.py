"""Recipes sized to the data and the machine: a folder's recipe from its image count and the
host, a batch that fits the machine's memory (or a refusal naming the numbers and the flag),
a warm-up longer than the run scaled and said."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

from byol_tf.training import config as run_config
from byol_tf.training import memory, recipes
from byol_tf.training.config import ConfigError
from helpers.folders import jpeg_folder

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIB = 2**30


def test_a_folder_gets_a_recipe_for_its_size_and_host_never_imagenets_on_a_cpu():
    for images, epochs in ((1_000, 50), (9_469, 5), (40, 100), (10_000_000, 1)):
        name, recipe = recipes.for_folder(images, accelerator=False)
        assert name == "folder_cpu" and recipe["epochs"] == epochs
        assert recipe["encoder"] == "tiny_resnet_cifar" and recipe["image_size"] == 64
        # epochs × images ≈ FOLDER_CPU_IMAGES wherever the 1..100 clip allows.
        if 1 < epochs < 100:
            assert abs(epochs * images - recipes.FOLDER_CPU_IMAGES) <= images / 2
    assert recipes.for_folder(1_000, accelerator=False)[1]["batch_size"] == 128
    assert recipes.for_folder(100, accelerator=False)[1]["batch_size"] == 64  # ≤ the images
    assert recipes.for_folder(16, accelerator=False)[1]["batch_size"] == 16
    assert recipes.for_folder(9_469, accelerator=True)[0] == "folder"
    assert recipes.for_folder(1_281_167, accelerator=True)[0] == "imagenet2012"
    assert recipes.RECIPES["folder_cpu"]["epochs"] == 50  # the recipe itself is untouched


def test_step_estimate_is_the_documented_formula_and_grows_with_the_image_area():
    assert memory.step_bytes(2, 10, 3) == int(1.25 * GIB + 4 * (1.25 * 2 * 10 + 16 * 3))
    config = dict(encoder="tiny_resnet_cifar", hidden_dim=64, projection_dim=32)
    small, params = memory.model_size(dict(config, image_size=32))
    large, params_large = memory.model_size(dict(config, image_size=64))
    # The CIFAR stem keeps the resolution, so every layer's output scales with the area,
    # except the pooled representation (128 values whatever the size).
    assert large - 128 == 4 * (small - 128) and params == params_large
    # Parameters: the encoder's, plus the projector's and the predictor's dense kernels.
    from byol_tf import encoders

    encoder = encoders.get("tiny_resnet_cifar").count_params()
    assert params == encoder + 128 * 64 + 64 * 32 + 2 * 32 * 64
    # A step that holds both views' layer outputs at once (every method but BYOL without β,
    # whose TF step takes one view's gradient after the other) counts them twice.
    for method, options, views in (("byol", {}, 1), ("byol", {"beta": 0.5}, 2),
                                   ("simclr", {}, 2), ("moco", {}, 2), ("multiview", {}, 2)):
        held, same = memory.model_size(dict(config, image_size=32, method=method,
                                            method_options=options))
        assert (held, same) == (views * small, params), method


def test_a_recipes_batch_shrinks_to_fit_and_a_users_batch_is_refused_with_the_numbers():
    config = dict(recipes.RECIPES["imagenet2012"], image_size=64)
    activations, parameters = memory.model_size(config)
    # Room for exactly batch 512 (in 90% of the memory), not for 1024.
    available = memory.step_bytes(512, activations, parameters) / 0.9 + 1
    batch, note = run_config.fit_batch(config, available, batch_given=False)
    assert batch == 512 and "Batch 4096 of the recipe" in note and "training with batch 512" in note
    with pytest.raises(ConfigError) as refused:
        run_config.fit_batch(config, available, batch_given=True)
    message = str(refused.value)
    need = memory.step_bytes(4096, activations, parameters)
    assert "--batch_size=4096" in message and f"{need / GIB:.1f} GiB" in message
    assert f"{available / GIB:.1f} GiB available" in message and "use --batch_size=512" in message
    # Not even the smallest batch fits: the flags that make the step smaller.
    with pytest.raises(ConfigError, match="--image_size or --encoder"):
        run_config.fit_batch(config, 1.0 * GIB, batch_given=False)
    assert run_config.fit_batch(config, 10_000 * GIB, batch_given=True) == (4096, None)


def test_a_warmup_longer_than_the_run_becomes_the_recipes_share_of_it():
    config = dict(recipes.RECIPES["imagenet2012"], epochs=20)
    note = run_config.scale_warmup(config, "imagenet2012", given=False)
    assert config["warmup_epochs"] == pytest.approx(20 * 10 / 1000)  # 1% of the run
    assert "10 epochs" in note and "0.2 epochs" in note and "1%" in note
    config = dict(recipes.RECIPES["sample"], epochs=1, warmup_epochs=3)
    run_config.scale_warmup(config, "sample", given=True)  # given: 10%
    assert config["warmup_epochs"] == pytest.approx(0.1)


def cgroup_with_limit(limit):
    """A new memory cgroup (v1 or v2) under this process's, limited to `limit` bytes; None
    when this machine does not let us make one."""
    for line in pathlib.Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        for base, key in ((f"/sys/fs/cgroup/memory{path}", "memory.limit_in_bytes"),
                          (f"/sys/fs/cgroup{path}", "memory.max")):
            if ("memory" in controllers.split(",") or number == "0") and os.path.isdir(base):
                group = pathlib.Path(base) / f"byol-test-{os.getpid()}-{time.time_ns()}"
                try:
                    group.mkdir()
                    (group / key).write_text(str(int(limit)))
                    return group
                except OSError:
                    if group.exists():
                        group.rmdir()
    return None


def test_a_folder_on_a_cpu_trains_simclr_with_byol_one_flag_away(tmp_path):
    """folder_cpu names SimCLR (it learned faster than BYOL in minutes on real photos,
    bench/results/budget_curve_imagenette_mini.md); --method overrides it; other recipes keep
    BYOL; a resumed run keeps the method it recorded, whatever the recipe says now."""
    import dataclasses

    from helpers.train_config import resolve_args

    folder = jpeg_folder(tmp_path / "images", 8, side=32)
    cpu, gpu = run_config.Host(), run_config.Host(accelerator=True)
    args = (f"--dataset={folder}", "--noknn", "--batch_size=4")
    config, notes = resolve_args(*args, host=cpu)
    assert (config.recipe, config.method) == ("folder_cpu", "simclr")
    assert any("Recipe folder_cpu" in note and "simclr" in note for note in notes)
    assert resolve_args(*args, "--method=byol", host=cpu)[0].method == "byol"
    assert resolve_args(*args, "--method=multiview", host=cpu)[0].method == "multiview"
    assert resolve_args(*args, host=gpu)[0].method == "byol"  # the folder recipe on a GPU
    assert resolve_args(*args, "--recipe=sample", host=cpu)[0].method == "byol"
    byol_run = dataclasses.asdict(resolve_args(*args, "--method=byol", host=cpu)[0])
    assert resolve_args(*args, host=cpu, previous=byol_run)[0].method == "byol"
    assert resolve_args(*args, "--method=simclr", host=cpu,
                        previous=byol_run)[0].method == "simclr"  # (the folder then refuses)


def test_the_folder_recipe_trains_inside_its_memory_estimate(tmp_path):
    """A folder of 224-px JPEGs gets folder_cpu (as imagenette-mini does: the same encoder, size
    and batch); its steps run with the process's peak resident memory under the estimate and,
    where this machine allows a memory cgroup, inside one limited to that estimate."""
    folder = jpeg_folder(tmp_path / "images", 160)
    name, recipe = recipes.for_folder(1_000, accelerator=False)
    estimate = memory.step_bytes(recipe["batch_size"], *memory.model_size(recipe))
    group = cgroup_with_limit(estimate)
    command = [sys.executable, "train.py", f"--dataset={folder}", "--epochs=1",
               f"--run_dir={tmp_path / 'run'}", "--noknn"]
    if group is not None:
        command = ["sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$@"', "sh", *command]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    peak = 0
    while process.poll() is None:  # the process's high-water mark, read while it runs
        try:
            status = pathlib.Path(f"/proc/{process.pid}/status").read_text()
            peak = max(peak, 1024 * int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
        except (OSError, AttributeError):
            pass
        time.sleep(0.1)
    out, err = process.communicate()
    if group is not None:
        group.rmdir()
    assert process.returncode == 0, err[-3000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert config["recipe"] == "folder_cpu" and config["batch_size"] == recipe["batch_size"]
    assert config["image_size"] == 64 and config["encoder"] == "tiny_resnet_cifar"
    assert config["method"] == "simclr"
    assert "Recipe folder_cpu for a folder of 160 images without a GPU" in out
    assert 0 < peak <= estimate, (peak / GIB, estimate / GIB)
