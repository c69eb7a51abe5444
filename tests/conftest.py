import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import byol_tf_runtime  # noqa: E402

byol_tf_runtime.use_onednn()  # as the commands do, before TensorFlow loads

import byol_tf  # noqa: E402,F401
import pathlib  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def decoded_cache(tmp_path_factory):
    """The tests' own cache of decoded TFDS splits (byol_tf.data.CACHE_ENV), not the user's."""
    from byol_tf import data

    if data.CACHE_ENV not in os.environ:
        os.environ[data.CACHE_ENV] = str(tmp_path_factory.mktemp("decoded_cache"))
    return pathlib.Path(os.environ[data.CACHE_ENV])


@pytest.fixture(scope="session")
def cifar10_dir():
    """DEST of `scripts/prepare_cifar10.py` ($BYOL_DATA_DIR or ~/.cache/byol_data).

    Missing data fails the test under CI (where .ci/run prepares it) and skips elsewhere."""
    dest = pathlib.Path(os.environ.get("BYOL_DATA_DIR", "~/.cache/byol_data")).expanduser()
    if not (dest / "tfds" / "cifar10").exists():
        message = f"real CIFAR-10 not prepared in {dest}: run python scripts/prepare_cifar10.py"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return dest


@pytest.fixture(scope="session")
def uint8_images():
    """32 real CIFAR-10 test images from the bundled sample, uint8 [32, 32, 32, 3]."""
    from byol_tf import data

    return data.load_sample()["x_test"][:32]


@pytest.fixture
def tiny_byol():
    """Factory of a small compiled BYOL (tiny ResNet, 16-d projection, LARS 0.1, seeded);
    keyword arguments override the BYOL constructor's."""
    from helpers.models import tiny_byol

    return tiny_byol


@pytest.fixture(scope="session")
def published_run(tmp_path_factory):
    """A short train.py run on the bundled sample (1 epoch of 3 steps, no kNN) published
    with `byol_tf.training.publish.publish_run` as `tiny_sample`: (run folder, zoo root)."""
    import subprocess
    import sys

    from byol_tf.training import publish

    root_dir = pathlib.Path(__file__).resolve().parents[1]
    base = tmp_path_factory.mktemp("published")
    run_dir = base / "run"
    result = subprocess.run(
        [sys.executable, str(root_dir / "train.py"), "--epochs=1", "--steps_per_epoch=3",
         "--batch_size=64", "--hidden_dim=64", "--noknn", f"--run_dir={run_dir}"],
        cwd=root_dir, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    root = base / "models"
    publish.publish_run(run_dir, "tiny_sample", root=root, linear_epochs=1)
    return run_dir, root


@pytest.fixture(scope="session")
def installed(tmp_path_factory):
    """byol_tf as a user installs it: the wheel built from this tree, installed into a folder of
    its own: (that site folder, a working folder outside the repository, the environment that
    imports byol_tf from the site folder)."""
    import shutil
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"  # the package's files only (a build writes into its source tree)
    for package in ("byol_tf", "byol_tf_runtime"):
        shutil.copytree(root / package, source / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(root / name, source / name)
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(tmp / "dist"), str(source)], capture_output=True, text=True,
                           timeout=600)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    (built,) = (tmp / "dist").glob("byol_tf-*.whl")
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--no-compile", "--target", str(site), str(built)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), TF_CPP_MIN_LOG_LEVEL="2")
    return site, work, env
