"""ResNet v1 encoders as in DeepMind's BYOL (haiku `ResNet` torso), by name.

`images [B, H, W, 3] (normalised) → representation [B, D]` (global average pool).

- Bottleneck blocks put the stride on the 3×3 conv ("v1.5", as the official code) and
  initialise the last batch-norm scale of every block at 0 (haiku's `scale_init=zeros`).
- A block has a projection shortcut (1×1 conv + BN) when its shape changes: the first
  block of every bottleneck group, of groups 2–4 of basic-block nets (haiku's configs).
- Stems: "imagenet" = 7×7/2 conv (padding "same") + BN + ReLU + 3×3/2 max-pool;
  "cifar" = 3×3/1 conv + BN + ReLU, no max-pool.
- BatchNorm: momentum 0.9, epsilon 1e-5 (official values). Convs: fan-in truncated
  normal (haiku's default initialiser).
- `norm="gn_ws"` (architectures `<name>_gnws`): no batch statistics anywhere (Richemond et al.
  2020, "BYOL works even without batch statistics"): every conv is weight-standardised
  (`WSConv2D`) and every BatchNorm is a GroupNormalization (16 groups, fewer when a layer
  has fewer channels; epsilon 1e-5; the same zero-initialised last scale).
- `norm="none"` (architectures `<name>_nonorm`): no normalisation layer at all, for the ablation
  "BYOL without batch norm" (Fetterman & Albrecht 2020).

keras-hub's ResNetBackbone was not used: its stem pads with ZeroPadding2D + "valid"
convs and it has no CIFAR stem or zero-initialised last BN, so it does not express the
official architecture exactly.
"""

import keras
from keras import layers

from byol_tf.layers import BN_EPSILON, BN_MOMENTUM, BatchNorm, WSConv2D

_DEPTHS = {
    10: ("basic", (1, 1, 1, 1)),  # small nets for CPU runs and tests
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}


GN_GROUPS = 16
_NORMS = {"batch_norm": "", "gn_ws": "_gnws", "none": "_nonorm"}  # norm → architecture suffix

def _conv(filters, kernel, stride, name, norm="batch_norm"):
    conv = WSConv2D if norm == "gn_ws" else layers.Conv2D
    return conv(
        filters, kernel, strides=stride, padding="same", use_bias=False, name=name,
        kernel_initializer=keras.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal"))


def _bn(name, zero_init=False, synchronized=True, norm="batch_norm", channels=None):
    gamma = "zeros" if zero_init else "ones"
    if norm == "none":
        return layers.Identity(name=name)
    if norm == "gn_ws":
        return layers.GroupNormalization(groups=min(GN_GROUPS, channels), epsilon=BN_EPSILON,
                                         gamma_initializer=gamma, name=name)
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name,
                     synchronized=synchronized, gamma_initializer=gamma)


def _block(x, channels, stride, bottleneck, name, sync, norm="batch_norm"):
    """One residual block; `channels` is the block's output width."""
    inner = channels // 4 if bottleneck else channels
    shortcut = x
    if stride != 1 or x.shape[-1] != channels:
        shortcut = _conv(channels, 1, stride, f"{name}_shortcut_conv", norm)(x)
        shortcut = _bn(f"{name}_shortcut_bn", synchronized=sync, norm=norm,
                       channels=channels)(shortcut)
    if bottleneck:
        specs = [(inner, 1, 1), (inner, 3, stride), (channels, 1, 1)]
    else:
        specs = [(inner, 3, stride), (channels, 3, 1)]
    for i, (filters, kernel, s) in enumerate(specs):
        last = i == len(specs) - 1
        x = _conv(filters, kernel, s, f"{name}_conv{i}", norm)(x)
        x = _bn(f"{name}_bn{i}", zero_init=last and bottleneck, synchronized=sync, norm=norm,
                channels=filters)(x)
        if not last:
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
    x = layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.ReLU(name=f"{name}_out")(x)


@keras.saving.register_keras_serializable(package="byol_tf")
class ResNet(keras.Model):
    """ResNet v1 torso with global average pooling (no classifier).

    Args:
      depth: 18, 34, 50, 101, 152 or 200.
      stem: "imagenet" or "cifar".
      width_multiplier: integer channel multiplier (ResNet-50 ×2, ×4).
      base_width: stem channels (64 in every standard ResNet); groups have
        base·(1, 2, 4, 8) channels, ×4 for bottleneck nets.
      sync_batch_norm: batch statistics over the global batch when a
        `tf.distribute` strategy has several replicas (as the official 512-core run).
      input_shape: (H, W, 3); H and W may be None.
      norm: "batch_norm", "gn_ws" (GroupNorm + weight-standardised convs) or "none".
    """

    def __init__(self, depth=50, stem="imagenet", width_multiplier=1, base_width=64,
                 sync_batch_norm=True, input_shape=(None, None, 3), name=None,
                 norm="batch_norm", **kwargs):
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"ResNet stem must be 'imagenet' or 'cifar', got {stem!r}")
        if norm not in _NORMS:
            raise ValueError(f"ResNet norm must be one of {sorted(_NORMS)}, got {norm!r}")
        block, blocks_per_group = _DEPTHS[depth]
        bottleneck = block == "bottleneck"
        base = [base_width * m * (4 if bottleneck else 1) for m in (1, 2, 4, 8)]
        stem_width = base_width * width_multiplier

        images = keras.Input(shape=tuple(input_shape), name="images")
        if stem == "imagenet":
            x = _conv(stem_width, 7, 2, "stem_conv", norm)(images)
        else:
            x = _conv(stem_width, 3, 1, "stem_conv", norm)(images)
        x = _bn("stem_bn", synchronized=sync_batch_norm, norm=norm, channels=stem_width)(x)
        x = layers.ReLU(name="stem_relu")(x)
        if stem == "imagenet":
            x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        for g, (num_blocks, channels) in enumerate(zip(blocks_per_group, base)):
            for b in range(num_blocks):
                stride = 2 if (g > 0 and b == 0) else 1
                x = _block(x, channels * width_multiplier, stride, bottleneck,
                           name=f"group{g}_block{b}", sync=sync_batch_norm, norm=norm)
        representation = layers.GlobalAveragePooling2D(name="pool")(x)
        suffix = _NORMS[norm]
        super().__init__(images, representation,
                         name=name or f"resnet{depth}_{stem}_x{width_multiplier}{suffix}", **kwargs)
        self.depth, self.stem, self.width_multiplier, self.norm = depth, stem, width_multiplier, norm
        self.base_width, self.sync_batch_norm = base_width, sync_batch_norm
        self.input_shape_ = tuple(input_shape)

    def get_config(self):
        return {"depth": self.depth, "stem": self.stem,
                "width_multiplier": self.width_multiplier, "base_width": self.base_width,
                "sync_batch_norm": self.sync_batch_norm,
                "input_shape": self.input_shape_, "name": self.name, "norm": self.norm,
                "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# Architectures as data: name → constructor arguments (`get(name)` builds one). In byol_tf, a
# "preset" is a zoo entry (`ImageEncoder.from_preset`), as in keras-hub.
ARCHITECTURES = {
    **{f"resnet{d}": dict(depth=d, stem="imagenet") for d in _DEPTHS},
    **{f"resnet{d}_cifar": dict(depth=d, stem="cifar") for d in _DEPTHS},
    "resnet50x2": dict(depth=50, stem="imagenet", width_multiplier=2),
    "resnet50x4": dict(depth=50, stem="imagenet", width_multiplier=4),
    "resnet200x2": dict(depth=200, stem="imagenet", width_multiplier=2),
    "tiny_resnet_cifar": dict(depth=10, stem="cifar", base_width=16),  # ~0.3 M, CPU demos
}
ARCHITECTURES.update({f"{name}{suffix}": dict(args, norm=norm)
                      for name, args in list(ARCHITECTURES.items())
                for norm, suffix in _NORMS.items() if suffix})


def get(name, **overrides):
    """Builds the encoder of a named architecture, e.g. `get("resnet18_cifar")`,
    `get("resnet50x2")`; `overrides` change its constructor's arguments."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown encoder architecture {name!r}; known: "
                         f"{', '.join(sorted(ARCHITECTURES))}")
    return ResNet(**{**ARCHITECTURES[name], **overrides})
