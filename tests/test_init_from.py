"""--init_from: a run's encoders start from a zoo entry (by name, folder or file:// URL), its
EMA copies restart from them, the evaluation measures the entry as it is, and the published
card names its parent."""

import json

import keras
import numpy as np
import pytest

import byol_tf
from byol_tf.training import config as run_config
from helpers.commands import ROOT, train

ENTRY = "byol_tiny_resnet_cifar10_sample"
ENTRY_FOLDER = ROOT / "byol_tf" / "models" / ENTRY
SMALL = dict(projection_dim=16, hidden_dim=32, seed=0)


def _pretrained_encoder(seed):
    """A tiny encoder whose weights (batch-norm statistics included) differ from a fresh
    one's."""
    encoder = byol_tf.encoders.get("tiny_resnet_cifar")
    rng = np.random.default_rng(seed)
    for variable in encoder.weights:
        variable.assign(rng.normal(0.5, 0.1, variable.shape).astype(variable.dtype))
    return encoder


@pytest.mark.parametrize("method", ["byol", "moco", "simclr"])
def test_start_from_encoder_sets_the_online_weights_and_restarts_the_ema_copies(method):
    keras.utils.set_random_seed(0)
    model = {"byol": lambda: byol_tf.BYOL("tiny_resnet_cifar", **SMALL),
             "moco": lambda: byol_tf.MoCo("tiny_resnet_cifar", queue_size=64, **SMALL),
             "simclr": lambda: byol_tf.SimCLR("tiny_resnet_cifar", **SMALL)}[method]()
    heads = {v.path: v.numpy() for v in model.weights
             if not any(v is w for w in model.online_encoder.weights)
             and not any(v is slow for slow, _ in model.ema_copies())}
    given = _pretrained_encoder(1)
    model.start_from_encoder(given)
    for own, want in zip(model.online_encoder.weights, given.weights):
        np.testing.assert_array_equal(own.numpy(), want.numpy(), err_msg=own.path)
    copies = model.ema_copies()
    assert bool(copies) == (method != "simclr")
    for slow, fast in copies:  # the target / key networks equal the online ones again
        np.testing.assert_array_equal(slow.numpy(), fast.numpy(), err_msg=slow.path)
    for variable in model.weights:  # heads, probe, queue: as they were
        if variable.path in heads:
            np.testing.assert_array_equal(variable.numpy(), heads[variable.path])
    with pytest.raises(ValueError, match="another architecture"):
        model.start_from_encoder(byol_tf.encoders.get("resnet10_cifar"))


def test_an_entry_is_named_by_name_folder_or_file_url_and_its_architecture_is_used():
    for handle in (ENTRY, str(ENTRY_FOLDER), ENTRY_FOLDER.as_uri()):
        parent = run_config.parent_of(handle)
        assert parent["name"] == ENTRY and parent["architecture"] == "tiny_resnet_cifar"
        assert parent["handle"] == handle and 0 < parent["knn_top1"] < 1


def test_a_folder_run_from_an_entry_crops_at_the_entrys_side_unless_told(tmp_path):
    from helpers.folders import jpeg_folder
    from helpers.train_config import resolve_args

    folder = jpeg_folder(tmp_path / "photos", 8, side=64)

    def resolved(*args):
        return resolve_args(f"--dataset={folder}", "--noknn", "--batch_size=4", *args)[0]

    assert resolved().image_size == 64  # the folder recipe's side
    adapted = resolved(f"--init_from={ENTRY}")
    assert (adapted.image_size, adapted.encoder) == (32, "tiny_resnet_cifar")  # the entry's
    assert adapted.parent["image_size"] == 32 and adapted.init_from == ENTRY
    assert resolved(f"--init_from={ENTRY}", "--image_size=48").image_size == 48
    # the folder recipe's SimCLR, but adapting an entry goes on with the entry's objective
    assert (resolved().method, adapted.method, adapted.parent["method"]) == (
        "simclr", "byol", "byol")
    assert resolved(f"--init_from={ENTRY}", "--method=simclr").method == "simclr"


@pytest.mark.parametrize("bad,message", [
    ("--init_from=no_such_entry", "--init_from=no_such_entry"),
    (f"--init_from={ENTRY} --encoder=resnet18_cifar", "the entry is a tiny_resnet_cifar"),
])
def test_a_bad_init_from_is_refused_before_anything_is_written(tmp_path, bad, message):
    result = train(*bad.split(), f"--run_dir={tmp_path / 'run'}")
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_a_run_starts_from_the_entry_and_its_card_names_the_parent(tmp_path):
    """With a learning rate of ~0, two steps leave the convolutions where the entry had
    them: the run started from the entry (not from random weights)."""
    run_dir = tmp_path / "run"
    result = train(f"--init_from={ENTRY_FOLDER.as_uri()}", "--epochs=1", "--steps_per_epoch=2",
                   "--batch_size=32", "--base_lr=1e-12", "--hidden_dim=32", "--projection_dim=16",
                   "--max_eval_examples=200", "--noknn_random_init", "--publish=adapted",
                   "--publish_linear_epochs=1", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    parent = byol_tf.zoo.load(ENTRY)
    trained = keras.models.load_model(run_dir / "encoder.keras")
    kernels = [(v.path, v.numpy()) for v in trained.encoder.weights if "kernel" in v.path]
    assert kernels
    for (path, value), want in zip(kernels, [v for v in parent.encoder.weights
                                             if "kernel" in v.path]):
        np.testing.assert_allclose(value, want.numpy(), atol=1e-6, err_msg=path)
    knn = json.loads((run_dir / "metrics.json").read_text())["knn"]
    # The entry as it is, measured on the same 200 test images by the same kNN.
    want = byol_tf.evaluation.knn_accuracy(parent, *byol_tf.data.load_arrays(
        "sample", max_train=200, max_test=200, image_size=32))
    assert knn["parent"] == pytest.approx(want, abs=1e-9)
    card = json.loads((run_dir / "zoo" / "adapted" / "model_card.json").read_text())
    assert card["pretraining"]["parent"]["name"] == ENTRY
    assert card["pretraining"]["parent"]["handle"] == ENTRY_FOLDER.as_uri()
    readme = (run_dir / "zoo" / "adapted" / "README.md").read_text()
    assert f"Started from the zoo entry `{ENTRY}`" in readme
