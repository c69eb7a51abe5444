"""Small files that ask for gigabytes are refused by name before anything is allocated: images
whose size is stated past the first bytes, model files whose declared network is larger than
the weights they carry, pickles of shared or self-referring containers, .npz datasets that
inflate from little. One test per kind; `test_no_small_input_exceeds_a_memory_limit` runs them
all under a memory limit."""

import io
import json
import os
import pickle
import shutil
import zipfile
import zlib

import numpy as np
import pytest

from byol_tf import convert, model_files
from byol_tf.data import DataError, folders, sample
from byol_tf.files import sha256_file
from helpers.hostile import far_frame_jpeg, oversized_frame_gif

# A pickle calling numpy.ndarray((10**12,)): 4 TB it does not carry (protocol 2, 28 bytes).
# {"experiment_state": [[[…]]]}, lists 100,000 deep (200 KB: 100,000 empty lists, each appended
# to the one below).
DEEP = b"\x80\x02}U\x10experiment_state" + b"]" * 100_000 + b"a" * 99_999 + b"s."
ARRAY_CALL = b"\x80\x02cnumpy\nndarray\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85\x85R."


def test_images_are_sized_by_every_frame_wherever_the_file_states_it(tmp_path):
    import tensorflow as tf

    root = tmp_path / "photos"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            (root / c / f"{i}.png").write_bytes(tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    (root / "a" / "screen.gif").write_bytes(oversized_frame_gif(16_000, 16_000))
    (root / "b" / "late.jpg").write_bytes(far_frame_jpeg(np.zeros((30, 40, 3), np.uint8)))
    os.mkfifo(root / "b" / "pipe.jpg")  # (opening it would wait forever for a writer)
    (root / "b" / os.fsdecode(b"\xff.png")).write_bytes((root / "b" / "0.png").read_bytes())
    with pytest.raises(DataError) as refused:
        folders.list_folder(root, max_image_pixels=1000)
    message = str(refused.value)
    assert "screen.gif: 16000 × 16000 = 256,000,000 pixels, over the limit of 1,000" in message
    assert "late.jpg: 40 × 30 = 1,200 pixels, over the limit of 1,000" in message
    assert "pipe.jpg: not a regular file" in message and "4 unreadable image file(s)" in message
    assert "b/\\xff.png: its name is not valid UTF-8" in message
    files, classes = folders.list_folder(root, skip_bad_images=True, max_image_pixels=1000)
    assert len(files) == 4 and classes == ["a", "b"]


# ------------------------------------------------------------------ model files
def keras_file(path, edit_config=None, edit_weights=None):
    """A small encoder saved as `.keras`, its config or weights edited."""
    import keras

    from byol_tf import encoders

    encoders.get("tiny_resnet_cifar", input_shape=(32, 32, 3)).save(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if edit_config:
        config = json.loads(members["config.json"])
        edit_config(config)
        members["config.json"] = json.dumps(config).encode()
    if edit_weights:
        members["model.weights.h5"] = edit_weights(members["model.weights.h5"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    assert keras.__version__  # (Keras wrote it)
    return path


def no_weights(h5):
    """An HDF5 file of no weights (the archive then weighs a few KB)."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w"):
        pass
    return buffer.getvalue()


def undeclared_weights(h5):
    """A weights file whose one kernel is a dataset of 10^10 floats that stores none."""
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as store:
        store.create_dataset("layers/stem_conv/vars/0", shape=(10**10,), dtype="float32")
    return buffer.getvalue()


def test_a_model_file_is_refused_when_it_declares_more_than_it_carries(tmp_path):
    from byol_tf.image_encoder import load_image_encoder

    good = keras_file(tmp_path / "good.keras")
    model_files.check(good)  # a file Keras wrote passes
    wide = keras_file(tmp_path / "wide.keras",
                      lambda c: c["config"].update(width_multiplier=64), no_weights)
    assert wide.stat().st_size < 2**14
    with pytest.raises(model_files.ModelFileError,
                       match=r"wide.keras declares a model of [\d,]+ parameters but carries"):
        model_files.check(wide)
    with pytest.raises(ValueError, match="wide.keras declares a model of"):
        load_image_encoder(wide)
    hollow = keras_file(tmp_path / "hollow.keras", edit_weights=undeclared_weights)
    with pytest.raises(model_files.ModelFileError,
                       match=r"declares 40,000,000,000 bytes and stores 0"):
        model_files.check(hollow)
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * 50_000_000)
    with pytest.raises(model_files.ModelFileError, match="inflate to 50,000,000 bytes"):
        model_files.check(bomb)


def test_a_deepmind_checkpoint_is_refused_when_it_declares_more_than_it_carries():
    from helpers import deepmind_checkpoint as official

    # A stem kernel of 8× the channels (300 KB of real data) would build a ResNet-50×8 (6 GB).
    params = {"res_net50/~/initial_conv": {"w": np.zeros((7, 7, 3, 512), np.float32)}}
    with pytest.raises(convert.ConversionError,
                       match=r"declares a res_net50 of width ×8 \([\d,]+ parameters\) but "
                             r"the checkpoint carries 75,264 numbers"):
        convert.from_deepmind(official.pretrain_pickle(params, {}), image_size=32)


def test_a_pickle_cannot_allocate_what_it_does_not_carry():
    def refused(blob, match):
        with pytest.raises(convert.ConversionError, match=match):
            convert.read_checkpoint(blob)

    shared = []
    for _ in range(60):  # 2^60 paths through 60 distinct lists: pickled in ~500 bytes
        shared = [shared, shared]
    blob = pickle.dumps({"experiment_state": shared}, protocol=2)
    assert len(blob) < 1000
    refused(blob, "experiment_state is a list")  # (converted once per object: no blow-up)
    loop = []
    loop.append(loop)
    refused(pickle.dumps({"experiment_state": loop}, protocol=2), "a container inside itself")
    refused(DEEP, "nests containers")
    refused(ARRAY_CALL, r"calls numpy.ndarray\(...\) directly")
    # numpy's own reconstructor asked for elements the pickle does not fill.
    filled = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
              b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85U\x01b\x87R.")
    refused(filled, "asks numpy for an array of shape")


# ------------------------------------------------------------------ datasets
def npz_member(archive, name, shape, dtype=np.uint8, data=None):
    """Writes `name`.npy into the open zip: a header for `shape` and `data` (default: the
    declared bytes as zeros, streamed)."""
    from numpy.lib import format as npy

    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": npy.dtype_to_descr(np.dtype(dtype)),
                                        "fortran_order": False, "shape": shape})
    with archive.open(name + ".npy", "w", force_zip64=True) as member:
        member.write(header.getvalue())
        if data is not None:
            member.write(data)
            return
        left = int(np.prod(shape)) * np.dtype(dtype).itemsize
        while left:
            chunk = min(left, 1 << 24)
            member.write(bytes(chunk))
            left -= chunk


def test_an_npz_dataset_is_checked_from_its_headers_before_loading(tmp_path):
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        npz_member(archive, "x_train", (20_000, 64, 64, 3))  # 245 MB of zeros
        npz_member(archive, "y_train", (20_000,), np.int64)
        npz_member(archive, "x_test", (1, 64, 64, 3))
        npz_member(archive, "y_test", (1,), np.int64)
    assert bomb.stat().st_size < 2**20
    with pytest.raises(ValueError, match=r"x_train inflates to 245,760,000 bytes from [\d,]+ "
                                         r"\(a zip bomb\?\)"):
        sample.load_npz(bomb)
    liar = tmp_path / "liar.npz"
    with zipfile.ZipFile(liar, "w") as archive:
        npz_member(archive, "x_train", (10**6, 32, 32, 3), data=b"\0" * 3072)
    with pytest.raises(ValueError, match=r"x_train declares 3,072,000,000 bytes .* holds 3,072"):
        sample.load_npz(liar)
    assert zlib  # (deflate streams written by zipfile)


# ------------------------------------------------------------------ all of them, bounded
MEMORY_LIMIT = int(1.5 * 2**30)


def jpeg_declaring(width, height):
    """A small JPEG whose frame header declares width × height (its data is 8 × 8 pixels),
    after 100 KB of comments."""
    import tensorflow as tf

    jpeg = bytearray(far_frame_jpeg(np.zeros((8, 8, 3), np.uint8)))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    assert tf  # (encoded by TensorFlow, see far_frame_jpeg)
    return bytes(jpeg)


def test_no_small_input_exceeds_a_memory_limit(tmp_path):
    """Every kind above, each file under 1 MB (the card of 1 GB is a sparse file), read by the
    library (`zoo.load` for an entry) in a process limited to 1.5 GB of data memory: each is
    refused by name."""
    from helpers import deepmind_checkpoint as official
    from helpers.commands import run_command

    hostile = tmp_path / "hostile"
    (hostile / "images" / "a").mkdir(parents=True)
    (hostile / "images" / "a" / "screen.gif").write_bytes(oversized_frame_gif(16_000, 16_000))
    (hostile / "images" / "a" / "late.jpg").write_bytes(jpeg_declaring(60_000, 60_000))
    keras_file(hostile / "wide.keras", lambda c: c["config"].update(width_multiplier=64),
               no_weights)
    keras_file(hostile / "hollow.keras", edit_weights=undeclared_weights)
    (hostile / "entry").mkdir()  # a zoo entry whose encoder.keras is the wide one
    shutil.copyfile(hostile / "wide.keras", hostile / "entry" / "encoder.keras")
    (hostile / "entry" / "model_card.json").write_text(json.dumps(dict(
        name="entry", image_size=32, files={"encoder.keras": {
            "sha256": sha256_file(hostile / "entry" / "encoder.keras")}})))
    stem = {"res_net50/~/initial_conv": {"w": np.zeros((7, 7, 3, 512), np.float32)}}
    (hostile / "wide.pkl").write_bytes(official.pretrain_pickle(stem, {}))
    shared = []
    for _ in range(60):
        shared = [shared, shared]
    (hostile / "shared.pkl").write_bytes(pickle.dumps({"experiment_state": shared}, protocol=2))
    (hostile / "ndarray.pkl").write_bytes(ARRAY_CALL)
    with zipfile.ZipFile(hostile / "bomb.npz", "w", zipfile.ZIP_BZIP2) as archive:
        npz_member(archive, "x_train", (100_000, 64, 64, 3))  # 1.2 GB of zeros in ~1 KB
        npz_member(archive, "y_train", (100_000,), np.int64)
        npz_member(archive, "x_test", (1, 64, 64, 3))
        npz_member(archive, "y_test", (1,), np.int64)
    (hostile / "deep_card.json").write_text("[" * 100_000 + "]" * 100_000)
    with open(hostile / "huge_card.json", "wb") as f:
        f.truncate(2**30)  # (sparse: 1 GB long, nothing on disk)
    small = [p for p in hostile.rglob("*") if p.is_file() and p.name != "huge_card.json"]
    assert [p.name for p in small if p.stat().st_size >= 2**20] == []
    result = run_command("tests/helpers/bounded_inputs.py", hostile, memory_limit=MEMORY_LIMIT,
                         timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"images": "screen.gif: 16000 × 16000", "wide.keras": "declares a model of",
                "entry": "encoder.keras declares a model of",
                "hollow.keras": "declares 40,000,000,000 bytes and stores 0",
                "wide.pkl": "declares a res_net50 of width ×8",
                "shared.pkl": "experiment_state is a list",
                "ndarray.pkl": "calls numpy.ndarray(...) directly",
                "bomb.npz": "member x_train.npy is compressed with a method other than deflate",
                "deep_card.json": "nested too deeply",
                "huge_card.json": "1,073,741,824 bytes, over the limit"}
    assert set(outcomes) == set(expected)
    for name, words in expected.items():
        assert outcomes[name].startswith("refused: ") and words in outcomes[name], (
            name, outcomes[name])
    assert "late.jpg: 60000 × 60000" in outcomes["images"]


def test_the_commands_refuse_small_hostile_inputs_in_one_line_under_a_memory_limit(tmp_path):
    """train.py on a folder holding a GIF of a 16000 × 16000 frame, eval.py on a .keras that
    declares a ResNet 64 times as wide, byol-convert on a pickle declaring a ResNet-50×8, each
    in a process limited to 1.5 GB: exit status 2, one line naming the file, nothing written."""
    import tensorflow as tf

    from helpers import deepmind_checkpoint as official
    from helpers.commands import evaluate, run_command, train

    photos = tmp_path / "photos"
    for c in ("a", "b"):
        (photos / c).mkdir(parents=True)
        for i in range(4):
            (photos / c / f"{i}.png").write_bytes(
                tf.io.encode_png(np.full((16, 16, 3), 40 * i, np.uint8)).numpy())
    (photos / "a" / "screen.gif").write_bytes(oversized_frame_gif(16_000, 16_000))
    trained = train(f"--dataset={photos}", "--noknn", f"--run_dir={tmp_path / 'run'}",
                    memory_limit=MEMORY_LIMIT, timeout=300)
    wide = keras_file(tmp_path / "wide.keras",
                      lambda c: c["config"].update(width_multiplier=64), no_weights)
    evaluated = evaluate(f"--model={wide}", "--dataset=sample", memory_limit=MEMORY_LIMIT,
                         timeout=300)
    stem = {"res_net50/~/initial_conv": {"w": np.zeros((7, 7, 3, 512), np.float32)}}
    (tmp_path / "wide.pkl").write_bytes(official.pretrain_pickle(stem, {}))
    converted = run_command("byol_tf/cli/convert.py", f"--checkpoint={tmp_path / 'wide.pkl'}",
                            f"--out={tmp_path / 'out'}", memory_limit=MEMORY_LIMIT, timeout=300)
    for result, words in ((trained, "screen.gif: 16000 × 16000 = 256,000,000 pixels"),
                          (evaluated, "--model: " + str(wide) + " declares a model of"),
                          (converted, "declares a res_net50 of width ×8")):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and words in lines[-1], result.stderr[-2000:]
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run").exists() and not (tmp_path / "out").exists()
