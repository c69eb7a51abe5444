"""Input pipelines, the bundled sample, kNN evaluation."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from byol_tf import data, evaluation


def test_bundled_sample_is_real_balanced_cifar10(cifar10_dir):
    sample = data.load_sample()
    assert sample["x_train"].shape == (2000, 32, 32, 3) and sample["x_test"].shape == (500, 32, 32, 3)
    assert (np.bincount(sample["y_train"]) == 200).all() and (np.bincount(sample["y_test"]) == 50).all()
    full = np.load(cifar10_dir / "cifar10.npz")
    # Every image is the real one at its recorded index of the original splits.
    np.testing.assert_array_equal(full["x_train"][sample["train_index"]], sample["x_train"])
    np.testing.assert_array_equal(full["y_test"][sample["test_index"]], sample["y_test"])


def test_corrupt_or_tampered_sample_is_reported(tmp_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data.SAMPLE_FILE.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="corrupt"):
        data.load_sample(truncated)
    tampered = tmp_path / "tampered.npz"
    s = data.load_sample()
    np.savez(tampered, **{**s, "x_train": s["x_train"][:, :16]})
    with pytest.raises(ValueError, match="bad train arrays"):
        data.load_sample(tampered)
    with pytest.raises(FileNotFoundError):
        data.load_sample(tmp_path / "missing.npz")


def test_sample_pipeline():
    ds, info = data.pretrain_dataset("sample", batch_size=128, seed=0)
    assert info == dict(num_examples=2000, image_size=32, premade_views=False, num_classes=10)
    batches = list(ds)
    assert len(batches) == 2000 // 128  # drop_remainder: static shapes
    x, y = batches[0]
    assert x.shape == (128, 32, 32, 3) and x.dtype == tf.uint8 and y.shape == (128,)


def test_tfds_pipeline_and_errors(cifar10_dir):
    ds, info = data.pretrain_dataset("cifar10", 256, data_dir=cifar10_dir / "tfds")
    assert info["num_examples"] == 50000 and info["num_classes"] == 10
    x, y = next(iter(ds))
    assert x.shape == (256, 32, 32, 3) and x.dtype == tf.uint8
    with pytest.raises(ValueError, match="no split 'validation'"):
        data.pretrain_dataset("cifar10", 256, data_dir=cifar10_dir / "tfds", split="validation")
    with pytest.raises(ValueError, match="not prepared"):
        data.pretrain_dataset("cifar100", 256, data_dir=cifar10_dir / "tfds")
    with pytest.raises(ValueError, match="unknown dataset"):
        data.pretrain_dataset("no_such_dataset_or_folder", 256)
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.pretrain_dataset("sample", 4096)


def test_cifar10_decoded_once_gives_the_same_stream_as_its_files(cifar10_dir):
    """The in-memory path (the split decoded once, kept read-only and shared with the
    evaluation arrays) yields exactly the batches of decoding the files every epoch, also
    from a resume point (`skip`) and across the reshuffled second pass."""
    tfds_dir = cifar10_dir / "tfds"
    assert data.fits_in_memory("cifar10", "train", 50_000)
    assert not data.fits_in_memory("stl10", "unlabelled", 100_000)  # 2.8 GB streams
    kept, _ = data.pretrain_dataset("cifar10", 500, data_dir=tfds_dir, seed=3, repeat=True)
    files, _ = data.pretrain_dataset("cifar10", 500, data_dir=tfds_dir, seed=3, repeat=True,
                                     in_memory=False)
    keras.utils.set_random_seed(0)  # a global seed (0 once broke tensor-seeded shuffles)
    seeded, _ = data.pretrain_dataset("cifar10", 500, data_dir=tfds_dir, seed=3, repeat=True)
    for skip in (0, 99):  # batch 100 starts the second pass
        for (x1, y1), (x2, y2), (x3, y3) in zip(kept.skip(skip).take(2),
                                                files.skip(skip).take(2),
                                                seeded.skip(skip).take(2)):
            np.testing.assert_array_equal(x1.numpy(), x2.numpy())
            np.testing.assert_array_equal(y1.numpy(), y2.numpy())
            np.testing.assert_array_equal(x3.numpy(), x2.numpy())
            np.testing.assert_array_equal(y3.numpy(), y2.numpy())
    x_train, y_train, x_test, y_test = data.load_arrays("cifar10", tfds_dir)
    shared = data.decoded_split("cifar10", "train", tfds_dir)
    assert x_train.base is shared[0] or x_train is shared[0]  # one copy in memory
    assert not x_train.flags.writeable
    full = np.load(cifar10_dir / "cifar10.npz")  # the prepared arrays, in another order
    pairs = lambda x, y: sorted(zip(map(bytes, x), y.tolist()))  # noqa: E731
    assert pairs(x_test, y_test) == pairs(full["x_test"], full["y_test"])
    assert x_train.shape == (50_000, 32, 32, 3) and np.bincount(y_train).tolist() == [5000] * 10


def test_decoded_split_is_kept_on_disk_checked_and_decoded_again_when_damaged(
        cifar10_dir, tmp_path, monkeypatch, caplog):
    """A decoded split is written once and read back by the next process without decoding;
    a damaged or altered file is reported, ignored and rewritten; "off" keeps nothing."""
    import tensorflow_datasets as tfds

    tfds_dir = cifar10_dir / "tfds"
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path))
    decodes = []
    as_numpy = tfds.as_numpy
    monkeypatch.setattr(tfds, "as_numpy", lambda *a, **k: decodes.append(1) or as_numpy(*a, **k))

    def fresh_process():
        monkeypatch.setattr(data.tfds, "_DECODED", {})
        return data.decoded_split("cifar10", "test", tfds_dir)

    x, y = fresh_process()
    [cached] = (tmp_path / "decoded").glob("cifar10-*-test-*.npz")
    assert len(decodes) == 1 and x.shape == (10_000, 32, 32, 3) and y.dtype == np.int64
    x2, y2 = fresh_process()
    assert len(decodes) == 1  # read from the file
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)

    altered = x.copy()
    altered[0, 0, 0, 0] ^= 1
    with open(cached, "wb") as f:  # a valid file whose pixels were altered
        np.savez(f, x=altered, y=y, sha256=data.tfds._digest(x, y))
    for damage in ("altered", "flipped byte"):
        if damage == "flipped byte":  # a byte of the file (the zip's CRC fails)
            raw = bytearray(cached.read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            cached.write_bytes(bytes(raw))
        caplog.clear()
        before = len(decodes)
        x3, _ = fresh_process()
        assert len(decodes) == before + 1 and "damaged" in caplog.text, damage
        np.testing.assert_array_equal(x3, x)
    fresh_process()  # the rewritten file is read again
    assert len(decodes) == 3
    monkeypatch.setenv(data.CACHE_ENV, "off")
    cached.unlink()
    fresh_process()
    assert not list((tmp_path / "decoded").glob("*.npz"))


def test_folder_pipeline_makes_two_augmented_views(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(3):
            h, w = rng.integers(40, 90, 2)
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            (tmp_path / label / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    (tmp_path / "notes.txt").write_text("not an image")
    ds, info = data.pretrain_dataset(str(tmp_path), batch_size=2, image_size=24, seed=0)
    assert info["num_examples"] == 6 and info["num_classes"] == 2 and info["premade_views"]
    (v1, v2), y = next(iter(ds))
    assert v1.shape == (2, 24, 24, 3) and v2.shape == (2, 24, 24, 3) and v1.dtype == tf.float32
    assert 0 <= float(tf.reduce_min(v1)) and float(tf.reduce_max(v2)) <= 1
    assert not np.allclose(v1.numpy(), v2.numpy())
    assert set(y.numpy()) <= {0, 1}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.pretrain_dataset(str(empty), batch_size=2, image_size=24)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 8)), rng.normal(size=(40, 8))
    labels = rng.integers(0, 5, 300)
    predictions = evaluation.knn_predict(train, labels, test, 5, k=20, temperature=0.1, chunk=7)
    expected = []
    for t in test:
        sims = train @ t / np.linalg.norm(train, axis=1) / np.linalg.norm(t)
        nearest = np.argsort(-sims)[:20]
        votes = np.zeros(5)
        for j in nearest:
            votes[labels[j]] += np.exp(sims[j] / 0.1)
        expected.append(votes.argmax())
    np.testing.assert_array_equal(predictions, expected)
    # Separable clusters are classified perfectly.
    centres = np.eye(4) * 10
    x = np.repeat(centres, 50, 0) + rng.normal(size=(200, 4))
    y = np.repeat(np.arange(4), 50)
    assert (evaluation.knn_predict(x, y, centres + 0.1, 4, k=10) == np.arange(4)).all()
    with pytest.raises(ValueError, match="empty"):
        evaluation.knn_predict(train[:0], labels[:0], test, 5)
    # The votes behind the predictions (top-5 ranks the same votes).
    votes = evaluation.knn_votes(train, labels, test, 5, k=20)
    assert (votes.argmax(1) == predictions).all() and votes.shape == (40, 5)


def test_unlabelled_folder_uses_the_given_view_configs(tmp_path):
    """A folder without class sub-folders yields (view1, view2) pairs; the view configs a
    run gives its model (method_options) reach the per-image crop and the per-batch rest:
    with every augmentation off, each view is the image's bicubic resize."""
    from byol_tf import augment
    from byol_tf.training.config import view_configs

    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (36, 40, 3), dtype=np.uint8) for _ in range(4)]
    for i, image in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    identity = dict(augment.VIEW1, crop_area=[1.0, 1.0], crop_ratio=[40 / 36, 40 / 36],
                    flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0)
    view1, view2 = view_configs({"method_options": {"view1": identity, "view2": identity}})
    assert view1 == augment.check_config(identity)
    ds, info = data.pretrain_dataset(str(tmp_path), batch_size=4, image_size=24, seed=0,
                                     view1=view1, view2=view2)
    assert info["num_classes"] is None
    v1, v2 = next(iter(ds))  # no labels: the element is the pair itself
    expected = tf.clip_by_value(tf.image.resize(np.stack(images) / 255.0, (24, 24), "bicubic"), 0, 1)
    got = sorted(v1.numpy(), key=lambda v: v.sum())
    want = sorted(expected.numpy().astype(np.float32), key=lambda v: v.sum())
    # The crop evaluates the exact Keys kernel; TF's non-antialiased one reads a table (~5e-4).
    np.testing.assert_allclose(got, want, atol=2e-3)
    np.testing.assert_allclose(v1.numpy(), v2.numpy(), atol=1e-6)
    # The paper's views differ from each other.
    ds, _ = data.pretrain_dataset(str(tmp_path), batch_size=4, image_size=24, seed=0)
    p1, p2 = next(iter(ds))
    assert not np.allclose(p1.numpy(), p2.numpy())


def test_folder_arrays_crop_and_resize_like_the_model_input(tmp_path):
    rng = np.random.default_rng(2)
    images = {}
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        image = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
        (tmp_path / label / "0.png").write_bytes(tf.io.encode_png(image).numpy())
        images[label] = image
    (x, y), classes = data.folder_arrays(tmp_path, image_size=24)
    assert classes == ["a", "b"] and x.dtype == np.uint8 and x.shape == (2, 24, 24, 3)
    for i, label in enumerate(classes):
        crop = images[label][:, 5:45].astype(np.float32) / 255.0  # central 40×40 of 40×50
        expected = np.clip(tf.image.resize(crop, (24, 24), "bicubic", antialias=True), 0, 1)
        j = list(y).index(i)
        np.testing.assert_allclose(x[j], np.round(expected * 255), atol=1)
    with pytest.raises(ValueError, match="test folder"):
        data.load_arrays(str(tmp_path), image_size=24)
