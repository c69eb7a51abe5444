"""Docs that run: every Python block in README.md and docs/*.md runs as written (each in a fresh
process, in an empty folder, with byol_tf installed from its wheel), every local link resolves
and every repository path a page names exists. A block whose first line is `# requires: …` (a
TF Serving server, say) is compiled only. Runs under `runs/` are what the commands on the page
create, so they are not required."""

import pathlib
import re
import subprocess
import sys

import pytest

from helpers.docs import PAGES, blocks

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code, folder, env):
    """Runs `code` as a program in `folder` with the environment `env` (the installed wheel's:
    the `installed` fixture)."""
    return subprocess.run([sys.executable, "-c", code], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)


PYTHON = blocks("python")


@pytest.mark.parametrize("page,index,code", PYTHON,
                         ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in PYTHON])
def test_every_python_block_runs(page, index, code, tmp_path, installed):
    """As a user runs it: with byol_tf installed from its wheel, in an empty folder."""
    if code.startswith("# requires:"):
        compile(code, f"{page.name} block {index}", "exec")
        return
    result = run_python(code, tmp_path, installed[2])
    assert result.returncode == 0, f"{page.name} block {index}:\n{result.stderr[-3000:]}"


def test_a_block_changed_to_be_wrong_fails(tmp_path, installed):
    """The check above can fail: the README's zoo block with a wrong entry name does."""
    page, index, code = next(b for b in PYTHON if b[0].name == "README.md" and "zoo.load" in b[2])
    wrong = code.replace('"byol_tiny_resnet_cifar10"', '"byol_tiny_resnet_cifar11"')
    assert wrong != code
    result = run_python(wrong, tmp_path, installed[2])
    assert result.returncode != 0 and "byol_tiny_resnet_cifar11" in result.stderr


def test_every_link_and_named_path_exists():
    missing = []
    for page in PAGES:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)\)", text):
            if not target.startswith(("http://", "https://")) and not (page.parent / target).exists():
                missing.append(f"{page.name}: link {target}")
        for path in re.findall(r"`((?:bench|docs|scripts|byol_tf|models|tests)/[^`\s]*)`", text):
            path, _, test = path.rstrip(".,;:").partition("::")  # (a test: file::function)
            if not any(c in path for c in "<*{") and not (ROOT / path).exists():
                missing.append(f"{page.name}: path {path}")
            elif test and not re.search(rf"^def {re.escape(test)}\(", (ROOT / path).read_text(),
                                        re.MULTILINE):
                missing.append(f"{page.name}: test {path}::{test}")
    assert missing == []


def test_the_readme_is_short_and_speaks_to_users():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for phrase in ("this machine", "not runnable", "built on", "session", "issue "):
        for page in PAGES:
            assert phrase not in page.read_text().lower(), (page.name, phrase)


SHELL = blocks("bash")


@pytest.mark.parametrize("page,index,code", SHELL,
                         ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in SHELL])
def test_every_shell_block_parses(page, index, code):
    result = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
    assert result.returncode == 0, f"{page.name} block {index}: {result.stderr}"


def reader_folders(root):
    """Small stand-ins for the reader's folders the pages name: /data/train and /data/val (two
    classes of 24 and 8 PNGs) and /data/photos (16 PNGs, no classes)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    folders = {"/data/train": (root / "train", 12), "/data/val": (root / "val", 4),
               "/data/photos": (root / "photos", 16)}
    for name, (folder, count) in folders.items():
        for label, (low, high) in (("dark", (0, 100)), ("bright", (156, 256))):
            target = folder / label if name != "/data/photos" else folder
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count if name != "/data/photos" else count // 2):
                image = rng.integers(low, high, (40, 48, 3), dtype=np.uint8)
                (target / f"{label}{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    return {name: str(folder) for name, (folder, _) in folders.items()}


def stand_ins(root, cifar10_dir, code):
    """What `code` names that a test cannot fetch, as {text on the page: its stand-in}: the
    reader's folders (`reader_folders`), the CIFAR-10 folder (the prepared one), and DeepMind's
    570 MB `pretrain_res50x1.pkl` (made in `root`: its layout and ResNet-50 shapes, random
    weights)."""
    if "pretrain_res50x1.pkl" in code:
        from helpers import deepmind_checkpoint as official

        params, state = official.resnet50_tree()
        (root / "pretrain_res50x1.pkl").write_bytes(official.pretrain_pickle(params, state))
    return {**reader_folders(root / "data"), "~/.cache/byol_data": str(cifar10_dir)}


# Blocks that run for longer than a test may take on the page get these flags (train.py's own
# flags), appended to the command the marker names.
SHRINK = {"--strategy=mirrored": " --epochs=1 --steps_per_epoch=2 --noknn --run_dir=runs/mirrored"}


@pytest.mark.slow  # ~1-2 min each
@pytest.mark.parametrize("page_name,marker,made", [
    ("README.md", "byol-eval --model=runs/quickstart", "runs/quickstart/encoder.keras"),
    ("zoo.md", "--publish=my_entry", "my_zoo/my_entry/model_card.json"),
    ("zoo.md", "byol-convert", "exports/byol_res50x1/encoder.keras"),
    ("own_images.md", "--run_dir=runs/mine", "runs/photos/encoder.keras"),
    ("README.md", "byol-train --dataset=/data/train", "runs"),
    ("distributed.md", "--strategy=mirrored", "runs/mirrored/encoder.keras")])
def test_the_command_line_blocks_run_as_written(tmp_path, cifar10_dir, page_name, marker, made):
    """The pages' command-line blocks as written, with the installed commands (`python train.py`
    from a copy of the clone's two programs), in an empty folder; what they name that cannot be
    fetched is stood in for (`stand_ins`), a long run shrunk by its own flags (`SHRINK`)."""
    import os
    import shutil

    page, index, code = next(b for b in SHELL if b[0].name == page_name and marker in b[2])
    for name, stand_in in stand_ins(tmp_path, cifar10_dir, code).items():
        code = code.replace(name, stand_in)
    for line_marker, flags in SHRINK.items():
        code = "\n".join(line + flags if line_marker in line else line for line in code.splitlines())
    bin_dir = pathlib.Path(sys.executable).parent
    if not (bin_dir / "byol-train").exists():
        pytest.skip("byol_tf's commands are not installed in this environment")
    for program in ("train.py", "eval.py"):
        shutil.copy(ROOT / program, tmp_path / program)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(["bash", "-e", "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / made).exists()
