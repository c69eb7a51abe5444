"""Files written by byol_tf 0.1.0 (tests/data/release_0_1_0, made by its make.py with that
release) still load: the whole model's .keras file and a training checkpoint."""

import pathlib

import keras
import numpy as np

from byol_tf.training.checkpoints import CheckpointManager
from helpers.models import tiny_byol

RELEASE = pathlib.Path(__file__).parent / "data" / "release_0_1_0"


def test_a_0_1_0_keras_file_loads_with_its_weights_and_optimizer_state():
    expected = np.load(RELEASE / "expected.npz")
    model = keras.models.load_model(RELEASE / "byol.keras")
    np.testing.assert_allclose(np.asarray(model(expected["images"])), expected["embeddings"],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.target_encoder.weights[0].numpy(), expected["target0"])
    assert int(model.optimizer.iterations.numpy()) == int(expected["iterations"])


def test_a_0_1_0_checkpoint_restores_weights_and_augmentation_state():
    expected = np.load(RELEASE / "expected.npz")
    model = tiny_byol(num_classes=10)
    assert CheckpointManager(RELEASE / "checkpoints").restore(model) == 2
    np.testing.assert_allclose(np.asarray(model(expected["images"])), expected["embeddings"],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.seed_generator.state.numpy(), expected["seed_state"])
    assert int(model.optimizer.iterations.numpy()) == int(expected["iterations"])
