"""byol_tf as a user installs it: the wheel built from this tree, installed into a folder of
its own, used from a folder outside the repository (the zoo, the commands)."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(command, installed, timeout=300):
    site, work, env = installed
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_the_installed_zoo_lists_and_loads_from_anywhere(installed):
    site = installed[0]
    program = (
        "import json, byol_tf, numpy as np\n"
        f"assert byol_tf.__file__.startswith({str(site)!r}), byol_tf.__file__\n"
        "encoder = byol_tf.zoo.load('byol_tiny_resnet_cifar10')\n"
        "images = byol_tf.data.load_sample()['x_test'][:4]\n"
        "print(json.dumps(dict(names=byol_tf.zoo.list(), shape=list(encoder(images).shape))))\n")
    result = run([sys.executable, "-c", program], installed)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    registry = json.loads((ROOT / "byol_tf" / "zoo_registry.json").read_text())
    assert out["names"] == sorted(registry) and out["shape"] == [4, 128]


def test_the_commands_are_installed(installed):
    bin_dir = installed[0] / "bin"
    for command, flag in (("byol-train", "--dataset"), ("byol-eval", "--mode")):
        result = run([str(bin_dir / command), "--help"], installed)
        assert flag in result.stdout + result.stderr, (command, result.stderr[-2000:])
    listed = run([str(bin_dir / "byol-zoo"), "list"], installed)
    assert listed.returncode == 0 and "byol_tiny_resnet_cifar10\ttiny_resnet_cifar" in listed.stdout
    card = run([str(bin_dir / "byol-zoo"), "info", "byol_tiny_resnet_cifar10"], installed)
    assert card.returncode == 0 and json.loads(card.stdout)["dataset"] == "cifar10"
    missing = run([str(bin_dir / "byol-zoo"), "info", "no_such_entry"], installed)
    assert missing.returncode == 1 and "no zoo entry 'no_such_entry'" in missing.stderr


@pytest.mark.slow
def test_the_installed_cifar10_entry_reproduces_its_cards_knn(installed, cifar10_dir):
    program = (
        "import json, byol_tf, numpy as np\n"
        "from byol_tf import evaluation, zoo\n"
        f"cifar = np.load({str(cifar10_dir / 'cifar10.npz')!r})\n"
        "top1 = evaluation.knn_accuracy(zoo.load('byol_tiny_resnet_cifar10'), cifar['x_train'], "
        "cifar['y_train'], cifar['x_test'], cifar['y_test'], k=200)\n"
        "print(json.dumps(dict(top1=top1, card=zoo.info('byol_tiny_resnet_cifar10')['results'])))\n")
    result = run([sys.executable, "-c", program], installed, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["card"]["test_examples"] == 10_000
    assert abs(out["top1"] - out["card"]["knn_top1"]) <= 2e-4  # 2 test images of 10,000


def docs_command_lines():
    """{command: [argv]} of every byol-train, byol-eval, byol-convert and byol-zoo line in the
    README's and docs' shell blocks (continuations joined, comments and `VAR=…` prefixes
    dropped)."""
    import re
    import shlex

    from helpers.docs import blocks

    found = {}
    for _, _, block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                words = words[1:]
            if words and words[0] in ("byol-train", "byol-eval", "byol-convert", "byol-zoo"):
                found.setdefault(words[0], []).append(words)
    return found


def test_every_command_in_the_docs_is_one_the_installed_package_takes(installed):
    """Each `byol-*` line of the README and docs parses with the installed command's flags (names,
    types and choices; nothing runs), and the installed commands are on the wheel's entry
    points."""
    site = installed[0]
    lines = docs_command_lines()
    assert {"byol-train", "byol-eval"} <= set(lines)
    modules = {"byol-train": "train", "byol-eval": "eval", "byol-convert": "convert"}
    for command, module in modules.items():
        argvs = lines.get(command, [])
        result = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "helpers" / "parse_commands.py"), module],
            input=json.dumps(argvs), cwd=installed[1], env=installed[2], capture_output=True,
            text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        errors = json.loads(result.stdout.strip().splitlines()[-1])
        wrong = [(" ".join(argv), error) for argv, error in zip(argvs, errors) if error]
        assert wrong == [], wrong
    for argv in lines.get("byol-zoo", []):
        assert argv[1] in ("list", "info", "fetch", "--help"), argv
    entry_points = (next(site.glob("byol_tf-*.dist-info")) / "entry_points.txt").read_text()
    assert all(f"{command} =" in entry_points for command in lines), entry_points
