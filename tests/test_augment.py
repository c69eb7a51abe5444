"""Augmentations: each op against an independent reference (TF image ops, a numpy
convolution), and every probability and range checked over thousands of samples."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import byol_tf
from byol_tf import augment as A

N = 4000  # samples for the statistical checks


def binomial_ok(count, n, p, sigmas=4.5):
    return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p)) + 1e-9


@pytest.fixture(scope="module")
def draws():
    seed = keras.random.SeedGenerator(0)
    return {name: {k: np.asarray(v) for k, v in
                   A.sample_params(N, (224, 224), cfg, seed).items()}
            for name, cfg in (("view1", A.VIEW1), ("view2", A.VIEW2))}


def base_params(b, size):
    """Identity parameters for `b` images of side `size`."""
    return dict(crop_y=np.zeros(b, np.int32), crop_x=np.zeros(b, np.int32),
                crop_h=np.full(b, size, np.int32), crop_w=np.full(b, size, np.int32),
                flip=np.zeros(b, bool), jitter=np.zeros(b, bool), grayscale=np.zeros(b, bool),
                blur=np.zeros(b, bool), solarize=np.zeros(b, bool),
                brightness=np.zeros(b, np.float32), contrast=np.ones(b, np.float32),
                saturation=np.ones(b, np.float32), hue=np.zeros(b, np.float32),
                sigma=np.ones(b, np.float32),
                order=np.tile(np.arange(4, dtype=np.int32), (b, 1)))


# ------------------------------------------------------------------ probabilities
@pytest.mark.parametrize("view,key,p", [
    ("view1", "flip", 0.5), ("view2", "flip", 0.5),
    ("view1", "jitter", 0.8), ("view2", "jitter", 0.8),
    ("view1", "grayscale", 0.2), ("view2", "grayscale", 0.2),
    ("view1", "blur", 1.0), ("view2", "blur", 0.1),
    ("view1", "solarize", 0.0), ("view2", "solarize", 0.2),
])
def test_probabilities(draws, view, key, p):
    count = int(draws[view][key].sum())
    assert binomial_ok(count, N, p), f"{view}.{key}: {count}/{N}, expected p={p}"


@pytest.mark.parametrize("key,low,high", [
    ("brightness", -0.4, 0.4), ("contrast", 0.6, 1.4), ("saturation", 0.8, 1.2),
    ("hue", -0.1, 0.1), ("sigma", 0.1, 2.0)])
def test_ranges_are_uniform(draws, key, low, high):
    values = draws["view1"][key]
    assert values.min() >= low and values.max() <= high
    # Uniform: each decile of the range holds ~10% of the draws.
    counts = np.histogram(values, bins=10, range=(low, high))[0]
    assert all(binomial_ok(c, N, 0.1) for c in counts), counts


def test_colour_order_is_a_uniform_random_permutation(draws):
    order = draws["view1"]["order"]
    assert (np.sort(order, axis=1) == np.arange(4)).all()
    codes = order @ np.array([64, 16, 4, 1])
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 24 and all(binomial_ok(c, N, 1 / 24) for c in counts)


def test_crop_windows(draws):
    p = draws["view1"]
    y, x, h, w = p["crop_y"], p["crop_x"], p["crop_h"], p["crop_w"]
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 224).all() and (x + w <= 224).all()
    area = h * w / 224**2
    assert area.min() >= 0.075 and area.max() <= 1.0
    # A first attempt with area < 0.75 always fits, so below 0.5 the area is uniform.
    small = area[area < 0.5]
    counts = np.histogram(small, bins=6, range=(0.08, 0.5))[0]
    assert all(binomial_ok(c, len(small), 1 / 6, 5) for c in counts), counts
    # ... and the aspect ratio log-uniform in [3/4, 4/3] (up to pixel rounding).
    log_ratio = np.log(w[area < 0.5] / h[area < 0.5])
    assert log_ratio.min() > np.log(3 / 4) - 0.03 and log_ratio.max() < np.log(4 / 3) + 0.03
    counts = np.histogram(log_ratio, bins=4, range=(np.log(3 / 4), np.log(4 / 3)))[0]
    assert all(binomial_ok(c, len(log_ratio), 1 / 4, 5) for c in counts), counts
    # The crop origin is uniform over the positions where the window fits.
    rel = x / np.maximum(224 - w, 1)
    assert binomial_ok(int((rel < 0.5).sum()), N, 0.5, 5)


def test_samples_in_a_batch_get_different_draws():
    image = np.random.default_rng(0).uniform(size=(1, 32, 32, 3)).astype(np.float32)
    batch = np.repeat(image, 8, axis=0)
    v1, v2 = byol_tf.Augmenter(32, seed=3)(batch)
    for view in (np.asarray(v1), np.asarray(v2)):
        flat = view.reshape(8, -1)
        distances = np.abs(flat[:, None] - flat[None]).max(-1)
        assert (distances[~np.eye(8, dtype=bool)] > 1e-3).all()


def test_replicas_draw_their_own_slice():
    """Under a strategy every replica holds the same seed state; each must still get its
    own draws: replica r takes slice r of one draw for all replicas."""
    state = keras.random.SeedGenerator(11).state.numpy()
    draws = []
    for index in range(3):
        seed = keras.random.SeedGenerator(11)
        seed.state.assign(state)
        draws.append(np.asarray(A.sample_params(64, (32, 32), A.VIEW1, seed, (index, 3))["hue"]))
    seed = keras.random.SeedGenerator(11)
    seed.state.assign(state)
    together = keras.random.uniform((3, 64, A.NUM_DRAWS), seed=seed)
    for index in range(3):
        expected = -0.1 + 0.2 * np.asarray(together)[index, :, A._HUE]
        np.testing.assert_allclose(draws[index], expected, atol=1e-6)
    assert not np.allclose(draws[0], draws[1]) and not np.allclose(draws[1], draws[2])


def test_output_range_dtype_shape_and_uint8_input():
    images = np.random.default_rng(1).integers(0, 256, (16, 40, 40, 3)).astype(np.uint8)
    v1, v2 = byol_tf.Augmenter(24, seed=0)(images)
    for v in (v1, v2):
        assert v.shape == (16, 24, 24, 3) and v.dtype == tf.float32
        assert float(tf.reduce_min(v)) >= 0.0 and float(tf.reduce_max(v)) <= 1.0


def test_grayscale_and_solarize_fractions_in_outputs():
    """Effects seen in the outputs, not only the draws: grey images (R=G=B) ≈ 20%,
    and in view 2 solarized pixels appear (x ≥ 0.5 mapped below 0.5)."""
    rng = np.random.default_rng(2)
    colour = np.stack([np.full((32, 32), 0.9), np.full((32, 32), 0.2), np.full((32, 32), 0.4)], -1)
    images = np.repeat(colour[None], 2000, 0).astype(np.float32)
    images += rng.uniform(-0.05, 0.05, images.shape).astype(np.float32)
    seed = keras.random.SeedGenerator(5)
    view = np.asarray(A.augment(images, A.VIEW1, 32, seed))
    grey = np.abs(view - view[..., :1]).max(axis=(1, 2, 3)) < 1e-6
    assert binomial_ok(int(grey.sum()), 2000, 0.2), grey.sum()

    # Solarize alone (view 2 without jitter or blur): a bright image turns dark in ~20%.
    bright = np.full((2000, 16, 16, 3), 0.9, np.float32)
    only_solarize = dict(A.VIEW2, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    out = np.asarray(A.augment(bright, only_solarize, 16, seed))
    dark = np.abs(out - 0.1).max(axis=(1, 2, 3)) < 1e-5
    unchanged = np.abs(out - 0.9).max(axis=(1, 2, 3)) < 1e-5
    assert (dark | unchanged).all()
    assert binomial_ok(int(dark.sum()), 2000, 0.2), dark.sum()


# ------------------------------------------------------------------ each op vs a reference
def test_crop_resize_flip_matches_tf_image_resize_bicubic():
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(6, 32, 32, 3)).astype(np.float32)
    p = base_params(6, 32)
    p.update(crop_y=np.array([0, 3, 10, 1, 5, 0], np.int32),
             crop_x=np.array([0, 5, 2, 1, 9, 3], np.int32),
             crop_h=np.array([32, 20, 7, 16, 24, 29], np.int32),
             crop_w=np.array([32, 11, 19, 16, 18, 21], np.int32),
             flip=np.array([False, True, False, True, False, True]))
    out = np.asarray(A.crop_resize_flip(images, p, 24))
    for b in range(6):
        y, x, h, w = (int(p[k][b]) for k in ("crop_y", "crop_x", "crop_h", "crop_w"))
        crop = images[b:b + 1, y:y + h, x:x + w]
        upsampling = h <= 24 and w <= 24
        # antialias=True evaluates the exact Keys kernel (same as no antialias when
        # upsampling); TF's non-antialiased kernel reads a 1024-entry table (~5e-4).
        ref = tf.image.resize(crop, (24, 24), "bicubic", antialias=upsampling).numpy()[0]
        ref = np.clip(ref[:, ::-1] if p["flip"][b] else ref, 0, 1)
        np.testing.assert_allclose(out[b], ref, atol=1e-5 if upsampling else 2e-3, err_msg=b)


@pytest.mark.parametrize("op,value,reference", [
    (0, 0.3, lambda x, v: tf.image.adjust_brightness(x, v)),
    (0, -0.25, lambda x, v: tf.image.adjust_brightness(x, v)),
    (1, 1.35, lambda x, v: tf.image.adjust_contrast(x, v)),
    (1, 0.6, lambda x, v: tf.image.adjust_contrast(x, v)),
    (2, 1.2, lambda x, v: tf.image.adjust_saturation(x, v)),
    (2, 0.8, lambda x, v: tf.image.adjust_saturation(x, v)),
    (3, 0.08, lambda x, v: tf.image.adjust_hue(x, v)),
    (3, -0.1, lambda x, v: tf.image.adjust_hue(x, v)),
])
def test_colour_ops_match_tf_image(op, value, reference):
    images = np.random.default_rng(op).uniform(size=(3, 16, 16, 3)).astype(np.float32)
    p = base_params(3, 16)
    p["jitter"][:] = True
    key = ("brightness", "contrast", "saturation", "hue")[op]
    p[key][:] = value
    p["order"] = np.tile(np.array([op] + [k for k in range(4) if k != op], np.int32), (3, 1))
    out = np.asarray(A.color_jitter(images, p))
    ref = np.clip(reference(images, value).numpy(), 0, 1)
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_colour_order_matters_and_is_followed():
    images = np.random.default_rng(9).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    p = base_params(2, 8)
    p["jitter"][:] = True
    p["brightness"][:] = 0.3
    p["contrast"][:] = 1.4
    p["order"] = np.array([[0, 1, 2, 3], [1, 0, 2, 3]], np.int32)
    out = np.asarray(A.color_jitter(images, p))
    bc = tf.image.adjust_contrast(tf.clip_by_value(tf.image.adjust_brightness(images[:1], 0.3), 0, 1), 1.4)
    cb = tf.image.adjust_brightness(tf.clip_by_value(tf.image.adjust_contrast(images[1:], 1.4), 0, 1), 0.3)
    np.testing.assert_allclose(out[0], np.clip(bc.numpy()[0], 0, 1), atol=2e-5)
    np.testing.assert_allclose(out[1], np.clip(cb.numpy()[0], 0, 1), atol=2e-5)


def test_grayscale_weights():
    images = np.random.default_rng(3).uniform(size=(2, 5, 5, 3)).astype(np.float32)
    p = base_params(2, 5)
    p["grayscale"][:] = [True, False]
    out = np.asarray(A.color_jitter(images, p))
    gray = images[0] @ np.array([0.2989, 0.5870, 0.1140])
    np.testing.assert_allclose(out[0], np.repeat(gray[..., None], 3, -1), atol=1e-6)
    np.testing.assert_allclose(out[1], images[1], atol=0)


@pytest.mark.parametrize("size,sigma", [(32, 1.7), (64, 0.5), (224, 2.0)])
def test_gaussian_blur_matches_numpy_convolution(size, sigma):
    image = np.random.default_rng(size).uniform(size=(size, size, 3))
    radius = int(size / 10 / 2)  # kernel size = 10% of the side
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-taps**2 / (2 * sigma**2))
    kernel /= kernel.sum()
    padded = np.pad(image, ((radius, radius), (radius, radius), (0, 0)))  # 'SAME', zeros
    rows = sum(kernel[i] * padded[i:i + size] for i in range(2 * radius + 1))
    ref = sum(kernel[j] * rows[:, j:j + size] for j in range(2 * radius + 1))
    p = base_params(2, size)
    p["blur"][:] = [True, False]
    p["sigma"][:] = sigma
    out = np.asarray(A.gaussian_blur(np.stack([image, image]).astype(np.float32), p, 10.0))
    np.testing.assert_allclose(out[0], ref, atol=1e-5)
    np.testing.assert_allclose(out[1], image, atol=1e-6)


def test_solarize():
    images = np.linspace(0, 1, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    p = base_params(2, 4)
    p["solarize"][:] = [True, False]
    out = np.asarray(A.solarize(images, p, 0.5))
    np.testing.assert_allclose(out[0], np.where(images[0] >= 0.5, 1 - images[0], images[0]))
    np.testing.assert_allclose(out[1], images[1])


# ------------------------------------------------------------------ where it runs
def test_runs_in_tf_data_map_and_under_xla():
    images = np.random.default_rng(4).integers(0, 256, (12, 32, 32, 3)).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices(images).batch(4).map(byol_tf.Augmenter(32, seed=1))
    batches = list(ds)
    assert len(batches) == 3 and batches[0][0].shape == (4, 32, 32, 3)
    assert not np.allclose(batches[0][0].numpy(), batches[0][1].numpy())

    seed = keras.random.SeedGenerator(7)
    xla = tf.function(lambda x: A.augment(x, A.VIEW2, 32, seed), jit_compile=True)
    out = xla(tf.constant(images)).numpy()
    assert out.shape == (12, 32, 32, 3) and 0 <= out.min() and out.max() <= 1


def test_stream_draws_depend_on_the_position_alone():
    """The tf.data path (sources of varying image size): each crop and each batch's draws
    are functions of (seed, position), so the same position gives the same views in any
    order and any process, and other positions or seeds give others."""
    rng = np.random.default_rng(5)
    image = tf.constant(rng.integers(0, 256, (37, 45, 3)).astype(np.uint8))
    augmenter = byol_tf.Augmenter(24, seed=3)
    later = [np.asarray(v) for v in augmenter.crop_each(image, tf.constant(9, tf.int64))]
    first = [np.asarray(v) for v in augmenter.crop_each(image, tf.constant(2, tf.int64))]
    again = [np.asarray(v) for v in byol_tf.Augmenter(24, seed=3).crop_each(
        image, tf.constant(9, tf.int64))]
    other_seed = np.asarray(byol_tf.Augmenter(24, seed=4).crop_each(
        image, tf.constant(9, tf.int64))[0])
    np.testing.assert_array_equal(later[0], again[0])
    np.testing.assert_array_equal(later[1], again[1])
    assert later[0].shape == (24, 24, 3) and 0 <= later[0].min() and later[0].max() <= 1
    assert not np.allclose(later[0], first[0]) and not np.allclose(later[0], other_seed)
    views = tuple(tf.constant(rng.uniform(size=(4, 24, 24, 3)).astype(np.float32))
                  for _ in range(2))
    done = [np.asarray(v) for v in augmenter.finish(views, tf.constant(5, tf.int64))]
    redone = [np.asarray(v) for v in augmenter.finish(views, tf.constant(5, tf.int64))]
    np.testing.assert_array_equal(done[0], redone[0])
    assert not np.allclose(done[0], np.asarray(augmenter.finish(views, tf.constant(6, tf.int64))[0]))
