"""BYOL's two asymmetric views, drawn per sample, in plain `keras.ops`.

Everything here is a small pure function of a batch and its random draws, so it runs
inside a (jit-compiled) train step on any backend and inside `tf.data.map` on the
TensorFlow backend. No op needs `ImageProjectiveTransformV3` or `CropAndResize`: crop,
bicubic resize, flip and blur are per-sample interpolation matrices applied with einsum.

Numerics follow DeepMind's `byol/utils/augmentations.py` (colour ops, their clipping,
grayscale weights, blur kernel) and `tf.image.sample_distorted_bounding_box` +
`tf.image.resize(method="bicubic")` for the crop.

Shapes: images `[B, H, W, 3]`, float32 in [0, 1] (uint8 is accepted and scaled).
"""

import functools
import math

import keras
from keras import ops

from byol_tf.inputs import to_float_images

VIEW1 = dict(
    crop_area=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_prob=0.5,
    jitter_prob=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1,
    grayscale_prob=0.2, blur_prob=1.0, blur_sigma=(0.1, 2.0), blur_divider=10.0,
    solarize_prob=0.0, solarize_threshold=0.5,
)
VIEW2 = dict(VIEW1, blur_prob=0.1, solarize_prob=0.2)
CROP_ONLY = dict(VIEW1, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)



def check_config(config):
    """A view config in canonical (JSON) form; unknown or missing keys raise ValueError."""
    missing, unknown = set(VIEW1) - set(config), set(config) - set(VIEW1)
    if missing or unknown:
        raise ValueError(f"view config: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def view_configs(view1=None, view2=None):
    """(view1, view2) in canonical form: the given configs, or the paper's VIEW1 / VIEW2."""
    return check_config(view1 or VIEW1), check_config(view2 or VIEW2)


def without_crop(config):
    """The same view config with the crop turned off (window = the whole image)."""
    return dict(config, crop_area=[1.0, 1.0], crop_ratio=[1.0, 1.0])


_CROP_ATTEMPTS = 10  # as tf.image.sample_distorted_bounding_box in the official input
# Columns of the per-sample uniform draws.
_AREA = slice(0, _CROP_ATTEMPTS)
_RATIO = slice(_CROP_ATTEMPTS, 2 * _CROP_ATTEMPTS)
(_X, _Y, _FLIP, _JITTER, _GRAY, _BRIGHT, _CONTRAST, _SAT, _HUE,
 _BLUR, _SIGMA, _SOLAR) = range(2 * _CROP_ATTEMPTS, 2 * _CROP_ATTEMPTS + 12)
_ORDER = slice(2 * _CROP_ATTEMPTS + 12, 2 * _CROP_ATTEMPTS + 16)
NUM_DRAWS = 2 * _CROP_ATTEMPTS + 16


def uniform_draws(batch_size, seed, replica=None):
    """`[B, NUM_DRAWS]` uniform draws in [0, 1), one row per sample; `seed` a
    `keras.random.SeedGenerator` or an int. `replica`: optional (index, count) under a
    multi-replica strategy: the draws for all `count` local batches are made and replica
    `index` takes its own slice, so replicas sharing one (mirrored) seed still augment
    independently."""
    if replica is None:
        return keras.random.uniform((batch_size, NUM_DRAWS), seed=seed)
    index, count = replica
    return ops.take(keras.random.uniform((count, batch_size, NUM_DRAWS), seed=seed), index, axis=0)


def sample_params(batch_size, image_shape, config, seed, replica=None):
    """One view's random parameters, drawn independently for every sample
    (`view_params` of `uniform_draws`)."""
    return view_params(uniform_draws(batch_size, seed, replica), image_shape, config)


def view_params(u, image_shape, config):
    """One view's parameters from the uniform draws `u [B, NUM_DRAWS]`.

    Args:
      u: `[B, NUM_DRAWS]` uniform draws in [0, 1).
      image_shape: (H, W) of the input images (ints, or scalar tensors).
      config: a view config such as `VIEW1`.
    Returns:
      dict of `[B]` tensors (`crop_y, crop_x, crop_h, crop_w` int32 pixels, `flip`,
      `jitter`, `grayscale`, `blur`, `solarize` booleans, `brightness` delta,
      `contrast`/`saturation` factors, `hue` delta, `sigma` in pixels) and
      `order` `[B, 4]` int32, a permutation of (brightness, contrast, saturation, hue).
    """
    height, width = image_shape
    params = crop_window(u, height, width, config)

    def uniform(col, low, high):
        return low + (high - low) * u[:, col]

    params.update(
        flip=u[:, _FLIP] < config["flip_prob"],
        jitter=u[:, _JITTER] < config["jitter_prob"],
        grayscale=u[:, _GRAY] < config["grayscale_prob"],
        blur=u[:, _BLUR] < config["blur_prob"],
        solarize=u[:, _SOLAR] < config["solarize_prob"],
        brightness=uniform(_BRIGHT, -config["brightness"], config["brightness"]),
        contrast=uniform(_CONTRAST, 1 - config["contrast"], 1 + config["contrast"]),
        saturation=uniform(_SAT, 1 - config["saturation"], 1 + config["saturation"]),
        hue=uniform(_HUE, -config["hue"], config["hue"]),
        sigma=uniform(_SIGMA, *config["blur_sigma"]),
        order=ops.cast(ops.argsort(u[:, _ORDER], axis=-1), "int32"),
    )
    return params


def crop_window(u, height, width, config):
    """Random-resized-crop windows: area U[a0, a1]·H·W, log-uniform aspect w/h.

    Up to 10 attempts per sample; the first that fits is used, else the whole image.
    `u` holds the uniform draws `[B, NUM_DRAWS]`; height/width may be tensors.
    """
    area_lo, area_hi = config["crop_area"]
    log_lo, log_hi = math.log(config["crop_ratio"][0]), math.log(config["crop_ratio"][1])
    area = height * width * (area_lo + (area_hi - area_lo) * u[:, _AREA])
    ratio = ops.exp(log_lo + (log_hi - log_lo) * u[:, _RATIO])
    w = ops.round(ops.sqrt(area * ratio))
    h = ops.round(ops.sqrt(area / ratio))
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = ops.argmax(ops.cast(fits, "int32"), axis=-1)
    pick = ops.one_hot(first, _CROP_ATTEMPTS, dtype="float32")
    any_fit = ops.any(fits, axis=-1)
    w = ops.where(any_fit, ops.sum(w * pick, axis=-1), ops.cast(width, "float32"))
    h = ops.where(any_fit, ops.sum(h * pick, axis=-1), ops.cast(height, "float32"))
    x = ops.floor(u[:, _X] * (width - w + 1))
    y = ops.floor(u[:, _Y] * (height - h + 1))
    as_int = lambda t: ops.cast(t, "int32")  # noqa: E731
    return dict(crop_y=as_int(y), crop_x=as_int(x), crop_h=as_int(h), crop_w=as_int(w))


def _keys_cubic(x, a=-0.5):
    x = ops.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return ops.where(x <= 1, near, ops.where(x < 2, far, 0.0))


def resize_matrix(start, length, in_size, out_size, flip=None):
    """Per-sample bicubic interpolation matrices `[B, out_size, in_size]`.

    Row i holds the weights that `tf.image.resize(..., "bicubic")` (half-pixel
    centres, Keys a = -0.5, taps outside the crop dropped and the rest renormalised)
    gives to input pixels for output pixel i of the crop `[start, start + length)`.
    `flip` (bool `[B]`) reverses the output order (a horizontal flip).
    """
    start = ops.cast(start, "float32")[:, None, None]
    length = ops.cast(length, "float32")[:, None, None]
    i = ops.arange(out_size, dtype="float32")[None, :, None]
    if flip is not None:
        i = ops.where(flip[:, None, None], out_size - 1 - i, i)
    src = (i + 0.5) * length / out_size - 0.5  # in crop coordinates
    taps = ops.floor(src) + ops.arange(-1, 3, dtype="float32")[None, None, :]
    weights = _keys_cubic(src - taps) * ops.cast((taps >= 0) & (taps < length), "float32")
    weights = weights / ops.sum(weights, axis=-1, keepdims=True)
    columns = ops.cast(start + ops.clip(taps, 0, length - 1), "int32")
    return ops.einsum("bot,boti->boi", weights, ops.one_hot(columns, in_size, dtype="float32"))


def crop_resize_flip(images, params, out_size):
    """`[B, H, W, C]` → `[B, out_size, out_size, C]`: crop, bicubic resize, flip (H and W
    may be known only at run time)."""
    height, width = ops.shape(images)[1], ops.shape(images)[2]
    rows = resize_matrix(params["crop_y"], params["crop_h"], height, out_size)
    cols = resize_matrix(params["crop_x"], params["crop_w"], width, out_size, params["flip"])
    out = ops.einsum("boh,bhwc,bpw->bopc", rows, images, cols)
    return ops.clip(out, 0.0, 1.0)


def rgb_to_hsv(r, g, b):
    """As DeepMind's (and TF's adjust_saturation kernel); inputs in [0, 1]."""
    value = ops.maximum(ops.maximum(r, g), b)
    spread = value - ops.minimum(ops.minimum(r, g), b)
    sat = ops.where(value > 0, spread / ops.where(value > 0, value, 1.0), 0.0)
    norm = ops.where(spread != 0, 1.0 / (6.0 * ops.where(spread != 0, spread, 1.0)), 1e9)
    hr = norm * (g - b)
    hg = norm * (b - r) + 2.0 / 6.0
    hb = norm * (r - g) + 4.0 / 6.0
    hue = ops.where(r == value, hr, ops.where(g == value, hg, hb))
    hue = hue * ops.cast(spread > 0, hue.dtype)
    hue = hue + ops.cast(hue < 0, hue.dtype)
    return hue, sat, value


def hsv_to_rgb(h, s, v):
    c = s * v
    m = v - c
    dh = (h % 1.0) * 6.0
    x = c * (1 - ops.abs(dh % 2.0 - 1))
    sector = ops.floor(dh)

    def pick(full, partial):
        is_full = (sector == full[0]) | (sector == full[1])
        is_partial = (sector == partial[0]) | (sector == partial[1])
        return ops.where(is_full, c, ops.where(is_partial, x, 0.0)) + m

    return pick((0, 5), (1, 4)), pick((1, 2), (0, 3)), pick((3, 4), (2, 5))


def color_jitter(images, params):
    """Brightness, contrast, saturation, hue in each sample's random order, each
    clipped to [0, 1]; then grayscale. Samples with `jitter` False skip the jitter."""
    per_image = lambda t: t[:, None, None]  # noqa: E731
    out = images
    for position in range(4):
        op = per_image(params["order"][:, position])
        r, g, b = out[..., 0], out[..., 1], out[..., 2]
        # Saturation and hue share one HSV round trip.
        h, s, v = rgb_to_hsv(r, g, b)
        s = ops.where(op == 2, ops.clip(s * per_image(params["saturation"]), 0.0, 1.0), s)
        h = ops.where(op == 3, (h + per_image(params["hue"])) % 1.0, h)
        hsv_rgb = ops.stack(hsv_to_rgb(h, s, v), axis=-1)
        brightened = out + per_image(params["brightness"])[..., None]
        mean = ops.mean(out, axis=(1, 2), keepdims=True)
        contrasted = per_image(params["contrast"])[..., None] * (out - mean) + mean
        op = op[..., None]
        changed = ops.where(op == 0, brightened, ops.where(op == 1, contrasted, hsv_rgb))
        out = ops.clip(changed, 0.0, 1.0)
    out = ops.where(per_image(params["jitter"])[..., None], out, images)
    return ops.where(per_image(params["grayscale"])[..., None], grayscale(out), out)


def grayscale(images):
    gray = ops.sum(images * ops.array([0.2989, 0.5870, 0.1140]), axis=-1, keepdims=True)
    return ops.repeat(gray, 3, axis=-1)


def blur_matrix(sigma, size, divider, apply):
    """`[B, size, size]` separable Gaussian blur (zero padding, 'SAME'), identity
    where `apply` is False. Kernel of 2·int(size/divider/2)+1 taps, σ in pixels."""
    radius = int(size / divider / 2)
    d = ops.arange(size, dtype="float32")
    d = d[None, :, None] - d[None, None, :]
    sigma = sigma[:, None, None]
    taps = ops.arange(-radius, radius + 1, dtype="float32")[None, None, :]
    total = ops.sum(ops.exp(-(taps**2) / (2.0 * sigma**2)), axis=-1, keepdims=True)
    kernel = ops.where(ops.abs(d) <= radius, ops.exp(-(d**2) / (2.0 * sigma**2)), 0.0) / total
    return ops.where(apply[:, None, None], kernel, ops.eye(size)[None])


def gaussian_blur(images, params, divider):
    size = images.shape[1]
    if images.shape[2] != size:
        raise ValueError(f"gaussian_blur needs square images, got {images.shape[1:3]}")
    m = blur_matrix(params["sigma"], size, divider, params["blur"])
    return ops.einsum("bih,bhwc,bjw->bijc", m, images, m)


def solarize(images, params, threshold):
    flip = params["solarize"][:, None, None, None] & (images >= threshold)
    return ops.where(flip, 1.0 - images, images)


def fused(fn):
    """`fn` XLA-compiled on the TensorFlow backend, as is elsewhere (JAX fuses by itself).

    Colour jitter is some 200 element-wise ops on the whole batch; compiled, they run as a
    few fused loops instead of 200 passes over the batch. Runs inside the (not compiled) train step, in `tf.data`
    maps and eagerly; inside an XLA-compiled step it is simply part of that step."""
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn, jit_compile=True, reduce_retracing=True)


@functools.cache
def _fused_color_jitter(backend):
    return fused(color_jitter)


def apply_view(images, params, config, out_size):
    """Applies drawn `params` to float images: crop+resize+flip, colour, blur, solarize."""
    out = crop_resize_flip(images, params, out_size)
    if config["jitter_prob"] > 0 or config["grayscale_prob"] > 0:
        out = _fused_color_jitter(keras.backend.backend())(out, params)
    if config["blur_prob"] > 0:
        out = gaussian_blur(out, params, config["blur_divider"])
    if config["solarize_prob"] > 0:
        out = solarize(out, params, config["solarize_threshold"])
    return ops.clip(out, 0.0, 1.0)


def augment(images, config, out_size, seed, replica=None):
    """One random view of every image: `[B, H, W, 3]` → `[B, out_size, out_size, 3]`."""
    images = to_float_images(images)
    params = sample_params(ops.shape(images)[0], images.shape[1:3], config, seed, replica)
    return apply_view(images, params, config, out_size)

