"""Importing DeepMind's official BYOL checkpoints (byol_tf.convert).

Equivalence: dm-haiku's own `hk.nets.ResNet` (the module the official code builds on), run
on JAX CPU with random weights and real batch statistics, written into the official pickle
layout, converted, and compared with the Keras model on the same real images. Robustness:
a pickle naming a foreign global is refused without running it; a missing, extra or
mis-shaped parameter is named in the error.
"""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf
from byol_tf import convert, data
from byol_tf.preprocessing import IMAGENET_MEAN, IMAGENET_STD

sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))
import deepmind_checkpoint as official  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _real_images(n, size):
    """n real CIFAR-10 sample images, bicubic-resized to size, in [0, 1]."""
    images = data.load_sample()["x_test"][:n]
    x = tf.image.resize(tf.cast(images, tf.float32) / 255.0, (size, size), "bicubic")
    return np.clip(x.numpy(), 0.0, 1.0)


def _normalise(x):
    return ((x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).astype(np.float32)


# ------------------------------------------------------------------ haiku equivalence
def _haiku_model(width, heads):
    """hk.transform_with_state of the official architecture: a haiku ResNet-50 (× width)
    with the linear probe, and optionally the projector and predictor MLPs."""
    hk = pytest.importorskip("haiku")
    jax = pytest.importorskip("jax")

    class MLP(hk.Module):  # the official byol/utils/networks.py head
        def __init__(self, name, hidden, out):
            super().__init__(name=name)
            self.hidden, self.out = hidden, out

        def __call__(self, x, is_training):
            x = hk.Linear(self.hidden, with_bias=True)(x)
            x = hk.BatchNorm(True, True, decay_rate=0.9, eps=1e-5)(x, is_training=is_training)
            return hk.Linear(self.out, with_bias=False)(jax.nn.relu(x))

    def forward(x, is_training):
        net = hk.nets.ResNet(
            blocks_per_group=(3, 4, 6, 3), bottleneck=True, num_classes=1000,
            channels_per_group=tuple(width * c for c in (256, 512, 1024, 2048)),
            use_projection=(True,) * 4, initial_conv_config={"output_channels": 64 * width},
            bn_config={"decay_rate": 0.9, "eps": 1e-5}, name="res_net50")
        grabbed = {}

        def grab(next_f, args, kwargs, context):  # the logits layer's input = representation
            if context.module.module_name == "res_net50/~/logits":
                grabbed["embedding"] = args[0]
            return next_f(*args, **kwargs)

        with hk.intercept_methods(grab):
            logits = net(x, is_training=is_training)
        out = {"embedding": grabbed["embedding"], "logits": logits}
        if heads:
            out["projection"] = MLP("projector", 64, 32)(out["embedding"], is_training)
            out["prediction"] = MLP("predictor", 64, 32)(out["projection"], is_training)
        return out

    return hk.without_apply_rng(hk.transform_with_state(forward))


def _haiku_reference(images, width, heads, dtype, seed=0):
    """Official-layout (params, state) of `_haiku_model` with random weights and batch
    statistics from training-mode passes over `images`, and its inference outputs, all
    computed in `dtype` (float64: JAX's x64 mode)."""
    import jax
    import jax.numpy as jnp

    model = _haiku_model(width, heads)
    with jax.enable_x64(dtype == "float64"):
        x = jnp.asarray(_normalise(images), dtype)
        params, state = model.init(jax.random.PRNGKey(seed), x, is_training=True)
        rng = np.random.default_rng(seed)
        params = {m: dict(v) for m, v in params.items()}
        for module, leaves in params.items():  # no zero-initialised scale or logits layer
            for name, value in leaves.items():
                if name == "scale":
                    value = rng.uniform(0.5, 1.5, value.shape)
                elif name in ("offset", "b"):
                    value = rng.normal(0, 0.1, value.shape)
                elif module.endswith("logits"):
                    value = rng.normal(0, 0.05, value.shape)
                # float32-representable values, so both precisions hold the same weights
                leaves[name] = jnp.asarray(np.asarray(value, np.float32), dtype)
        for _ in range(3):  # moving statistics of real activations (debiased EMA)
            _, state = model.apply(params, state, x, is_training=True)
        outputs, _ = model.apply(params, state, x, is_training=False)
        to_numpy = lambda tree: {m: {n: np.asarray(v) for n, v in leaves.items()}  # noqa: E731
                                 for m, leaves in tree.items()}
        params, state = to_numpy(params), to_numpy(state)
        outputs = {k: np.asarray(v) for k, v in outputs.items()}
    # The official checkpoint keeps the linear probe as a top-level `classifier` module.
    params["classifier"] = params.pop("res_net50/~/logits")
    return params, state, outputs


def _keras_outputs(blob, images, dtype, image_size=224):
    """Converts `blob` with Keras' float type `dtype`; its outputs on `images`."""
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)  # inputs
    keras.config.set_dtype_policy(dtype)  # variables and computations
    try:
        converted = convert.from_deepmind(blob, image_size=image_size)
        x = _normalise(images).astype(dtype)
        embedding = converted.encoder(x, training=False)
        out = {"embedding": embedding, "logits": converted.classifier(embedding, training=False)}
        if converted.projector is not None:
            out["projection"] = converted.projector(embedding, training=False)
            out["prediction"] = converted.predictor(out["projection"], training=False)
        return converted, {k: np.asarray(v, np.float64) for k, v in out.items()}
    finally:
        keras.config.set_floatx(previous[0])
        keras.config.set_dtype_policy(previous[1])


def _compare(got, expected, label):
    """Largest |Keras − haiku| per output (and the output's largest |value|)."""
    report = {}
    for key, value in got.items():
        diff = float(np.max(np.abs(value - np.asarray(expected[key], np.float64))))
        scale = float(np.max(np.abs(expected[key])))
        print(f"{label} {key}: max |keras − haiku| = {diff:.2e} (max |haiku| = {scale:.2f})")
        assert scale > 0.1, f"{key} is degenerate: not a meaningful comparison"
        report[key] = (diff, scale)
    return report


def _float32(tree):
    return {m: {n: np.asarray(v, np.float32) for n, v in leaves.items()} for m, leaves in tree.items()}


@pytest.fixture(scope="module")
def resnet50_reference():
    """4 real images at 224 px; float64 haiku params, statistics and outputs."""
    images = _real_images(4, 224)
    return (images, *_haiku_reference(images, width=1, heads=True, dtype="float64"))


def test_resnet50_matches_haiku_in_float64(resnet50_reference):
    """float64 on both sides isolates the name/shape/semantics map from rounding."""
    from haiku._src.data_structures import FlatMapping  # Haiku's 2020 parameter container

    images, params, state, expected = resnet50_reference
    blob = official.pretrain_pickle(params, state, step=123, wrap=FlatMapping)
    converted, got = _keras_outputs(blob, images, "float64")
    assert converted.step == 123 and converted.architecture["depth"] == 50
    assert converted.encoder.get_layer("stem_conv").kernel.dtype == "float64"
    assert not np.allclose(expected["logits"][0], expected["logits"][1])
    for key, (diff, _) in _compare(got, expected, "float64").items():
        assert diff <= 1e-4, key  # measured ≤ 1e-11


def test_resnet50_float32_error_is_rounding(resnet50_reference):
    """float32, as the released checkpoints and as users run: Keras is no further from the
    float64 result than haiku's own float32 computation of the same network (both differ
    from it by float32 rounding, ~1e-4 at logits of magnitude 10)."""
    import jax.numpy as jnp

    images, params, state, expected = resnet50_reference
    params32, state32 = _float32(params), _float32(state)
    _, got = _keras_outputs(official.pretrain_pickle(params32, state32), images, "float32")
    haiku_params = {**params32, "res_net50/~/logits": params32["classifier"]}
    del haiku_params["classifier"]
    haiku32, _ = _haiku_model(1, True).apply(haiku_params, state32,
                                              jnp.asarray(_normalise(images)), is_training=False)
    keras_error = _compare(got, expected, "float32 keras vs float64")
    haiku_error = _compare({k: np.asarray(v, np.float64) for k, v in haiku32.items()}, expected,
                           "float32 haiku vs float64")
    for key, (diff, _) in keras_error.items():
        assert diff <= 3 * haiku_error[key][0] + 1e-6, key


@pytest.mark.slow  # ~35 s; the 1× ResNet-50 comparisons stay in the default suite
def test_width_multiplier_2_matches_haiku():
    images = _real_images(2, 64)
    params, state, expected = _haiku_reference(images, width=2, heads=False, dtype="float64", seed=1)
    converted, got = _keras_outputs(official.pretrain_pickle(params, state), images, "float64",
                                    image_size=64)
    assert converted.architecture["width_multiplier"] == 2 and converted.projector is None
    assert got["embedding"].shape == (2, 4096)
    for key, (diff, _) in _compare(got, expected, "×2 float64").items():
        assert diff <= 1e-4, key


@pytest.mark.slow  # ~13 s; missing / extra parameters are named in the default suite
def test_official_basic_block_resnet18_is_refused_by_name():
    """The official ResNet-18/34 give block 0 of group 0 a projection shortcut (use_projection
    all True); byol_tf's do not, so the conversion names those parameters."""
    hk = pytest.importorskip("haiku")
    import jax

    def forward(x):
        return hk.nets.ResNet(blocks_per_group=(2, 2, 2, 2), bottleneck=False, num_classes=10,
                              channels_per_group=(64, 128, 256, 512), use_projection=(True,) * 4,
                              name="res_net18")(x, is_training=True)

    params, state = hk.transform_with_state(forward).init(jax.random.PRNGKey(0),
                                                          np.zeros((1, 32, 32, 3), np.float32))
    params = {("classifier" if k.endswith("logits") else k): v for k, v in params.items()}
    with pytest.raises(convert.ConversionError,
                       match=r"not consumed.*res_net18/~/block_group_0/~/block_0/~/shortcut"):
        convert.from_deepmind(official.pretrain_pickle(params, state), image_size=32)


# ------------------------------------------------------------------ bad checkpoints
@pytest.fixture(scope="module")
def tree():
    return official.resnet50_tree()


def _convert(params, state):
    return convert.from_deepmind(official.pretrain_pickle(params, state), image_size=32)


def test_synthetic_tree_converts_and_every_weight_is_set(tree):
    params, state = tree
    converted = _convert(params, state)
    stem = converted.encoder.get_layer("stem_conv").kernel.numpy()
    np.testing.assert_array_equal(stem, params["res_net50/~/initial_conv"]["w"])
    bn = converted.encoder.get_layer("group3_block2_bn1")
    key = "res_net50/~/block_group_3/~/block_2/~/batchnorm_1"
    np.testing.assert_array_equal(bn.gamma.numpy(), params[key]["scale"].reshape(-1))
    np.testing.assert_array_equal(bn.moving_variance.numpy(),
                                  state[key + "/~/var_ema"]["average"].reshape(-1))
    shortcut = converted.encoder.get_layer("group2_block0_shortcut_conv").kernel.numpy()
    np.testing.assert_array_equal(shortcut, params["res_net50/~/block_group_2/~/block_0/~/shortcut_conv"]["w"])
    head_bn = converted.predictor.get_layer("bn")
    np.testing.assert_array_equal(head_bn.moving_mean.numpy(),
                                  state["predictor/batch_norm/~/mean_ema"]["average"].reshape(-1))
    expected_count = sum(v.size for leaves in params.values() for v in leaves.values()) + sum(
        leaves["average"].size for leaves in state.values())
    networks = [converted.encoder, converted.projector, converted.predictor, converted.classifier]
    assert sum(int(np.prod(w.shape)) for n in networks for w in n.weights) == expected_count


def test_linear_eval_checkpoint(tree):
    params, state = tree
    backbone = {k: v for k, v in params.items() if k.startswith("res_net50")}
    backbone_state = {k: v for k, v in state.items() if k.startswith("res_net50")}
    blob = official.eval_pickle(backbone, {"linear": params["classifier"]}, backbone_state)
    converted = convert.from_deepmind(blob, image_size=32)
    assert converted.kind == "linear-eval" and converted.projector is None
    np.testing.assert_array_equal(converted.classifier.layers[-1].kernel.numpy(),
                                  params["classifier"]["w"])


def test_unexpected_global_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    blob = pickle.dumps({"experiment_state": Exploit(), "step": 1}, protocol=2)
    with pytest.raises(convert.RefusedGlobal, match=r"refused global (posix|os)\.system"):
        convert.from_deepmind(blob)
    assert not marker.exists()
    with pytest.raises(convert.RefusedGlobal, match="builtins.eval"):
        convert.read_checkpoint(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x00\x85R.")


def test_missing_parameter_is_named(tree):
    params, state = tree
    key = "res_net50/~/block_group_1/~/block_3/~/conv_2"
    broken = {k: v for k, v in params.items() if k != key}
    with pytest.raises(convert.ConversionError, match=f"missing parameter {key}/w"):
        _convert(broken, state)
    stats = {k: v for k, v in state.items() if k != key.replace("conv_2", "batchnorm_2") + "/~/var_ema"}
    with pytest.raises(convert.ConversionError, match="missing statistic .*batchnorm_2/~/var_ema/average"):
        _convert(params, stats)


def test_extra_parameter_is_named(tree):
    params, state = tree
    extra = {**params, "res_net50/~/block_group_0/~/block_9/~/conv_0": {"w": np.zeros((1, 1, 4, 4))}}
    with pytest.raises(convert.ConversionError, match=r"not consumed.*block_9/~/conv_0/w"):
        _convert(extra, state)
    extra = {**params, "classifier": {**params["classifier"], "bias_2": np.zeros(3, np.float32)}}
    with pytest.raises(convert.ConversionError, match="classifier/bias_2"):
        _convert(extra, state)


def test_shape_mismatch_is_named(tree):
    params, state = tree
    key = "res_net50/~/block_group_2/~/block_1/~/conv_1"
    broken = dict(params)
    broken[key] = {"w": np.zeros((3, 3, 256, 128), np.float32)}
    with pytest.raises(convert.ConversionError,
                       match=rf"shape mismatch for {key}/w: checkpoint \(3, 3, 256, 128\)"):
        _convert(broken, state)


def test_truncated_and_foreign_files(tree, tmp_path):
    params, state = tree
    blob = official.pretrain_pickle(params, state)
    with pytest.raises(convert.ConversionError, match="not a readable pickle"):
        convert.read_checkpoint(blob[: len(blob) // 2])
    with pytest.raises(convert.ConversionError, match="experiment_state"):
        convert.read_checkpoint(pickle.dumps({"weights": [1, 2]}, protocol=2))
    with pytest.raises(FileNotFoundError):
        convert.read_checkpoint(tmp_path / "absent.pkl")


# ------------------------------------------------------------------ the one command
def test_cli_writes_keras_models_and_a_serving_classifier(tree, tmp_path):
    params, state = tree
    checkpoint = tmp_path / "pretrain_res50x1.pkl"
    checkpoint.write_bytes(official.pretrain_pickle(params, state, step=5))
    out = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "byol_tf.cli.convert", f"--checkpoint={checkpoint}",
                             f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.keras")) == [
        "classifier.keras", "encoder.keras", "predictor.keras", "projector.keras"]
    record = json.loads((out / "conversion.json").read_text())
    assert record["step"] == 5 and record["architecture"]["depth"] == 50
    assert len(record["source_sha256"]) == 64

    # Serving: uint8 256×256 images → official centre crop (224 of 256) → the Keras models.
    rng = np.random.default_rng(0)
    images = (_real_images(2, 256) * 255).round().astype(np.uint8)
    images[1] = rng.integers(0, 256, images[1].shape, dtype=np.uint8)
    serving = tf.saved_model.load(str(out / "saved_model" / "byol_res50x1" / "1"))
    served = serving.signatures["serving_default"](images=tf.constant(images))
    crop = _normalise(images[:, 16:240, 16:240].astype(np.float32) / 255.0)
    classifier = keras.models.load_model(out / "classifier.keras")  # uint8 images → logits
    encoder = keras.models.load_model(out / "encoder.keras")  # an ImageEncoder
    assert isinstance(encoder, byol_tf.ImageEncoder) and encoder.image_size == 224
    expected_embedding = encoder.encoder(crop).numpy()
    np.testing.assert_allclose(encoder(images).numpy(), expected_embedding, atol=1e-4)
    np.testing.assert_allclose(served["embedding"].numpy(), expected_embedding, atol=1e-4)
    np.testing.assert_allclose(served["logits"].numpy(), classifier(images).numpy(), atol=1e-4)
    # An existing output folder is never overwritten.
    again = subprocess.run([sys.executable, "-m", "byol_tf.cli.convert", f"--checkpoint={checkpoint}",
                            f"--out={out}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "not empty" in again.stderr


# ------------------------------------------------------------------ zoo entries
def test_imported_zoo_entry_fetches_verifies_converts_and_caches(tree, tmp_path, monkeypatch):
    from byol_tf import files, zoo

    params, state = tree
    checkpoint = tmp_path / "pretrain_res50x1.pkl"
    checkpoint.write_bytes(official.pretrain_pickle(params, state))
    monkeypatch.setenv("BYOL_TF_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "models"
    card = json.loads((ROOT / "models/byol_deepmind_res50x1/model_card.json").read_text())
    card["source"]["url"] = checkpoint.as_uri()
    card["image_size"] = 32
    (root / card["name"]).mkdir(parents=True)
    (root / card["name"] / "model_card.json").write_text(json.dumps(card))

    images = data.load_sample()["x_test"][:4]
    loaded = zoo.load(card["name"], root=root)
    assert loaded.trainable_weights == []
    # The official evaluation input at 32 px: centre crop int(0.875·32) = 28 (offset 2),
    # plain bicubic resize back to 32, ImageNet mean/std.
    crop = tf.image.resize(images[:, 2:30, 2:30].astype(np.float32) / 255.0, (32, 32), "bicubic")
    expected = convert.from_deepmind(checkpoint, image_size=32).encoder(
        _normalise(np.clip(crop.numpy(), 0, 1)), training=False)
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(expected), atol=1e-5)
    cached = list((tmp_path / "cache").rglob("image-encoder-*.keras"))
    assert len(cached) == 1  # converted once; the next load reads the cache
    np.testing.assert_allclose(np.asarray(zoo.load(card["name"], root=root)(images)),
                               np.asarray(expected), atol=1e-5)

    # A card with the file's sha256 accepts it; any other sha256 is refused.
    card["source"]["sha256"] = files.sha256_file(checkpoint)
    (root / card["name"] / "model_card.json").write_text(json.dumps(card))
    assert zoo.load(card["name"], root=root, trainable=True).trainable_weights
    card["source"]["sha256"] = "0" * 64
    (root / card["name"] / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="sha256|hash"):
        zoo.load(card["name"], root=root)
