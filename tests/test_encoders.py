"""Encoders: parameter counts against torchvision's standard ResNets, architecture details."""

import numpy as np
import pytest

from byol_tf import encoders

# Trainable parameters without the classifier: torchvision totals minus the fc layer.
TORCHVISION = {"resnet18": 11_689_512 - 513_000, "resnet34": 21_797_672 - 513_000,
               "resnet50": 25_557_032 - 2_049_000, "resnet101": 44_549_160 - 2_049_000}


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_parameter_counts_match_torchvision(name):
    assert trainable(encoders.get(name)) == TORCHVISION[name]


def test_cifar_stem_counts_and_shapes():
    model = encoders.get("resnet18_cifar")
    # 7×7×3×64 stem swapped for 3×3×3×64: 11.17 M.
    assert trainable(model) == TORCHVISION["resnet18"] - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64
    assert model(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 512)
    assert model.get_layer("group3_block1_out").output.shape[1:] == (None, None, 512)
    assert encoders.get("resnet18_cifar", input_shape=(32, 32, 3)).get_layer(
        "group3_block1_out").output.shape[1:3] == (4, 4)  # 32 / 8, no stem downsampling


def test_resnet50_details():
    model = encoders.get("resnet50", input_shape=(224, 224, 3))
    assert model.output_shape == (None, 2048)
    assert model.get_layer("group3_block2_out").output.shape[1:3] == (7, 7)
    # Stride on the 3×3 conv of a bottleneck block (as the official code), not the 1×1.
    assert model.get_layer("group1_block0_conv0").strides == (1, 1)
    assert model.get_layer("group1_block0_conv1").strides == (2, 2)
    assert model.get_layer("group1_block0_conv1").kernel_size == (3, 3)
    assert model.get_layer("stem_conv").padding == "same"
    # Last BN of each bottleneck block starts at zero scale; BN uses the official values.
    assert np.all(model.get_layer("group0_block0_bn2").gamma.numpy() == 0)
    assert np.all(model.get_layer("group0_block0_bn1").gamma.numpy() == 1)
    bn = model.get_layer("stem_bn")
    assert bn.momentum == 0.9 and bn.epsilon == 1e-5


def test_width_multiplier():
    # Wide ResNet-50 ×2: every conv twice as wide; the BYOL paper lists 94 M parameters.
    count = trainable(encoders.get("resnet50x2"))
    assert round(count / 1e6) == 94
    assert encoders.get("resnet50x2").output_shape == (None, 4096)


def test_round_trip_and_unknown_name():
    model = encoders.get("resnet18_cifar")
    clone = encoders.ResNet.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(model(x), clone(x))
    with pytest.raises(ValueError, match="Unknown encoder architecture 'resnet19'"):
        encoders.get("resnet19")
    with pytest.raises(ValueError, match="depth"):
        encoders.ResNet(depth=19)


def test_encoder_without_normalisation_is_the_plain_residual_net():
    """`_nonorm`: the same convs, no normalisation layer, so the output is a hand-built forward
    of the plain net (convs, ReLUs, adds, mean pool) with the same kernels."""
    import keras

    model = encoders.get("tiny_resnet_cifar_nonorm")
    assert model.name.endswith("_nonorm") and model.norm == "none"
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & {"BatchNorm", "BatchNormalization", "GroupNormalization"}
    normed = encoders.get("tiny_resnet_cifar")
    # Parameters: the BN-free net has exactly the BN net's minus BN's γ and β.
    bn_params = sum(int(np.prod(w.shape)) for layer in normed.layers
                    if "bn" in layer.name for w in layer.trainable_weights)
    assert trainable(model) == trainable(normed) - bn_params

    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
    def conv(h, name):
        return keras.ops.convert_to_numpy(model.get_layer(name)(h))

    h = np.maximum(conv(x, "stem_conv"), 0)
    for g in range(4):
        name = f"group{g}_block0"
        shortcut = conv(h, f"{name}_shortcut_conv") if g > 0 else h
        y = np.maximum(conv(h, f"{name}_conv0"), 0)
        h = np.maximum(conv(y, f"{name}_conv1") + shortcut, 0)
    np.testing.assert_allclose(model(x), h.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny_resnet_cifar_gnws", "tiny_resnet_cifar"])
def test_gnws_encoder_uses_no_batch_statistics(name):
    """`_gnws`: every conv weight-standardised, every norm a GroupNormalization of
    min(16, channels) groups, so in training mode an image's features do not depend on the
    other images of its batch (Richemond et al. 2020); the batch-norm net's do."""
    from byol_tf.layers import WSConv2D

    model = encoders.get(name)
    x = np.random.default_rng(2).normal(size=(8, 16, 16, 3)).astype(np.float32)
    alone = np.asarray(model(x[:2], training=True))
    in_batch = np.asarray(model(x, training=True))[:2]
    if name.endswith("_gnws"):
        convs = [layer for layer in model.layers if "conv" in layer.name]
        norms = [layer for layer in model.layers if "bn" in layer.name]
        assert convs and all(isinstance(layer, WSConv2D) for layer in convs)
        assert norms and all(type(layer).__name__ == "GroupNormalization" and
                             layer.groups == min(16, layer.input.shape[-1]) for layer in norms)
        np.testing.assert_allclose(alone, in_batch, rtol=1e-4, atol=1e-5)
    else:
        assert not np.allclose(alone, in_batch, rtol=1e-2, atol=1e-3)


def test_byol_without_batch_statistics_heads_are_per_example():
    """The grid's `no_batch_stats_gnws` online network (GN+WS encoder, layer-norm projector and
    predictor) in training mode: each image's prediction is the same alone as in a batch."""
    import byol_tf

    model = byol_tf.BYOL("tiny_resnet_cifar_gnws", projector_norm="layer_norm",
                         predictor_norm="layer_norm", projection_dim=16, hidden_dim=32,
                         num_classes=10, seed=0)
    x = np.random.default_rng(3).normal(size=(8, 16, 16, 3)).astype(np.float32)

    def predict(images):
        features = model.online_encoder(images, training=True)
        return np.asarray(model.online_predictor(model.online_projector(features, training=True),
                                                 training=True))

    np.testing.assert_allclose(predict(x[:2]), predict(x)[:2], rtol=1e-4, atol=1e-5)
