"""The model zoo: published encoders, each a folder `models/<name>/`.

An entry holds `model_card.json` (architecture, data, recipe, evaluation results with the
commands that measured them, date, versions, and the sha256 of every file), a short
`README.md`, `encoder.keras` (a `byol_tf.ImageEncoder`: uint8 images of any size →
embedding) and the same model as a SavedModel (`saved_model/`, TF Serving signatures, see
byol_tf.export). A file too large for the repository is listed with a `url` instead
and fetched with `keras.utils.get_file` on first use; every file, local or fetched, must
match its sha256 or it is refused.

    byol_tf.zoo.list()                        → names
    byol_tf.zoo.info(name)                    → the model card
    byol_tf.zoo.load(name, trainable=False)   → ImageEncoder: uint8 images → embedding
    byol_tf.zoo.publish(run_dir, name)        → exports, evaluates, writes the entry

Imported entries (`"source": {"kind": "deepmind_checkpoint", "url": …}`) hold no weights:
`load` fetches the official checkpoint, checks it against the card's sha256 when the card
has one (else logs the fetched file's sha256 to compare with the publisher's), converts it
with `byol_tf.convert` (a restricted unpickler: a tampered file cannot run code) and caches
the converted encoder beside the download (under $BYOL_ZOO_CACHE, default ~/.keras).
"""

import datetime
import json
import os
import pathlib
import shutil

from byol_tf.records import sha256_file
from byol_tf.runs import RunFolder

ZOO_DIR = pathlib.Path(os.environ.get("BYOL_ZOO_DIR", pathlib.Path(__file__).parents[1] / "models"))
CARD = "model_card.json"
PICTURES = ("curves.png", "neighbours.png")  # a run's pictures that its entry shows


def list(root=None):  # noqa: A001  (the zoo's verb)
    """Names of the entries under `root` (default `models/`) whose card reads; a broken
    card is logged and its entry left out."""
    from absl import logging

    root = pathlib.Path(root or ZOO_DIR)
    if not root.exists():
        return []
    names = []
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or not (p / CARD).exists():
            continue
        try:
            info(p.name, root)
        except ValueError as error:
            logging.warning("%s; not listed", error)
            continue
        names.append(p.name)
    return names


def info(name, root=None):
    """The model card of entry `name`."""
    path = pathlib.Path(root or ZOO_DIR) / name / CARD
    if not path.exists():
        raise ValueError(f"No zoo entry {name!r} in {path.parent.parent}; entries: "
                         f"{', '.join(list(root)) or 'none'}")
    try:
        card = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"zoo entry {name!r}: {path} is not valid JSON ({error})") from None
    if not isinstance(card, dict) or not isinstance(card.get("files", {}), dict):
        raise ValueError(f"zoo entry {name!r}: {path} is not a model card (a JSON object with "
                         "a 'files' object)")
    return card


def published_from(name, run_dir, root=None):
    """True if entry `name` exists and was published from the run folder `run_dir`."""
    try:
        card = info(name, root)
    except ValueError:
        return False
    return card.get("pretraining", {}).get("run_dir") == str(pathlib.Path(run_dir).resolve())


def verified_files(name, root=None):
    """Checks (and fetches, for `url` entries) every file of the card; returns the entry
    folder. Raises ValueError naming the first file that is missing or does not match."""
    entry = pathlib.Path(root or ZOO_DIR) / name
    card = info(name, root)
    for relative, spec in card["files"].items():
        path = entry / relative
        if not path.exists() and spec.get("url"):
            import keras

            fetched = keras.utils.get_file(
                fname=relative.replace("/", "__"), origin=spec["url"], file_hash=spec["sha256"],
                hash_algorithm="sha256", cache_subdir=f"byol_tf_zoo/{name}")
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(fetched, path)
        if not path.exists():
            raise ValueError(f"zoo entry {name!r}: file {relative} is missing")
        actual = sha256_file(path)
        if actual != spec["sha256"]:
            raise ValueError(f"zoo entry {name!r}: {relative} has sha256 {actual[:12]}…, the card "
                             f"says {spec['sha256'][:12]}… (corrupt or tampered); refusing to load")
    return entry


def load(name, trainable=False, root=None):
    """The entry's `ImageEncoder`: uint8 (or [0, 1] float) images `[B, H, W, 3]` of any
    size → embedding `[B, D]`, through the entry's own `ImageConverter` (crop, resize,
    normalisation). `trainable` sets whether fine-tuning moves the encoder's weights; the
    input contract is the same either way, and the same as the entry's SavedModel.
    Imported entries: the official checkpoint, converted (see the module docstring).
    """
    from byol_tf.image_encoder import as_image_encoder

    card = info(name, root)
    if card.get("source", {}).get("kind") == "deepmind_checkpoint":
        model = _converted_encoder(card)
    else:
        import keras

        import byol_tf  # noqa: F401  (registers byol_tf's layers for loading)

        entry = verified_files(name, root)
        model = as_image_encoder(keras.models.load_model(entry / "encoder.keras"),
                                 card.get("image_size"))
    model.encoder.trainable = trainable
    return model


def _converted_encoder(card):
    """Fetches (or finds cached) the official checkpoint an imported entry points at,
    verifies it, converts it once and returns its `ImageEncoder`."""
    import urllib.parse

    import keras
    from absl import logging

    from byol_tf import convert

    source = card["source"]
    expected = source.get("sha256")
    filename = pathlib.PurePosixPath(urllib.parse.urlparse(source["url"]).path).name
    cache_dir = os.environ.get("BYOL_ZOO_CACHE")
    if cache_dir:  # get_file falls back to /tmp/.keras for a folder that does not exist yet
        pathlib.Path(cache_dir).expanduser().mkdir(parents=True, exist_ok=True)
    path = pathlib.Path(keras.utils.get_file(
        fname=filename, origin=source["url"], file_hash=expected, hash_algorithm="sha256",
        cache_dir=cache_dir, cache_subdir=f"byol_tf_zoo/{card['name']}"))
    actual = sha256_file(path)
    if expected and actual != expected:
        raise ValueError(f"zoo entry {card['name']!r}: {filename} has sha256 {actual[:12]}…, the "
                         f"card says {expected[:12]}… (corrupt or tampered); refusing to load")
    if not expected:
        logging.warning("zoo entry %r: the card gives no sha256 for %s; the fetched file's is "
                        "%s (compare it with the publisher's)", card["name"], filename, actual)
    cached = path.with_name(f"image-encoder-{actual[:16]}.keras")
    if cached.exists():
        return keras.models.load_model(cached)
    model = convert.from_deepmind(path, image_size=card["image_size"]).image_encoder()
    tmp = cached.with_name(cached.name + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, cached)
    return model


def publish(run_dir, name, root=None, linear_epochs=10, overwrite=False, eval_dataset=None):
    """Exports the run's `encoder.keras` into `models/<name>/`, evaluates it (kNN and linear
    on the run's dataset; `eval_dataset`: the labelled test folder of a run on an image
    folder) and writes the card and README. Returns the entry folder.

    The entry is built beside the zoo under a hidden name and moved into place only when
    complete; with `overwrite=True` an existing entry is kept until then, so a failed
    publish loses nothing."""
    import keras

    import byol_tf  # noqa: F401  (registers byol_tf's layers for loading)
    from byol_tf import data, evaluation, export
    from byol_tf.image_encoder import as_image_encoder
    from byol_tf.records import versions, write_json

    run_dir = pathlib.Path(run_dir)
    run_record = RunFolder(run_dir).record()
    if run_record is None:
        raise ValueError(f"{run_dir} is not a run folder (no config.json)")
    config = run_record["config"]
    entry = pathlib.Path(root or ZOO_DIR) / name
    if entry.exists() and not overwrite:
        raise FileExistsError(f"zoo entry {entry} exists; pass overwrite=True to replace it")
    model = as_image_encoder(keras.models.load_model(run_dir / "encoder.keras"),
                             config["image_size"])
    staging = entry.with_name(f".{name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save(staging / "encoder.keras")
    export.export_encoder(model, staging / "saved_model")
    pictures = [n for n in PICTURES if (run_dir / n).is_file()]
    for picture in pictures:
        shutil.copyfile(run_dir / picture, staging / picture)
    trained = _recorded_training(run_dir)

    x_train, y_train, x_test, y_test = data.load_arrays(
        config["dataset"], config["data_dir"], eval_folder=eval_dataset,
        image_size=config["image_size"])
    knn = _recorded_knn(run_dir, len(x_train), len(x_test))
    if knn is None:
        knn = evaluation.knn_accuracy(model, x_train, y_train, x_test, y_test)
    linear = evaluation.supervised_eval(model, x_train, y_train, x_test, y_test,
                                        protocol="linear", epochs=linear_epochs,
                                        batch_size=min(256, len(x_train)))
    files = {str(p.relative_to(staging)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(staging.rglob("*")) if p.is_file()}
    card = dict(
        name=name, architecture=config["encoder"], representation_dim=int(model.representation_dim),
        image_size=config["image_size"], dataset=config["dataset"],
        pretraining=dict(epochs=config["epochs"], batch_size=config["batch_size"],
                         steps=config["total_steps"], recipe={k: config[k] for k in (
                             "optimizer", "base_lr", "weight_decay", "tau_base", "warmup_epochs",
                             "hidden_dim", "projection_dim", "seed")},
                         method=config.get("method", "byol"),
                         method_options=config.get("method_options", {}),
                         command=" ".join(run_record.get("command", [])),
                         run_dir=str(run_dir.resolve()),
                         versions=run_record.get("versions", {}), **trained),
        results=dict(
            knn_top1=knn, knn_protocol="k=200, cosine, T=0.1, frozen encoder",
            linear_top1=linear["top1"], linear_top5=linear["top5"],
            linear_protocol=f"frozen encoder, SGD Nesterov 0.9, cosine LR 0.2·batch/256, "
                            f"crop+flip, {linear_epochs} epochs",
            train_examples=len(x_train), test_examples=len(x_test),
            command=f"byol_tf.zoo.publish({str(run_dir)!r}, {name!r}, linear_epochs={linear_epochs})"),
        pictures=pictures, date=datetime.date.today().isoformat(), versions=versions(), files=files,
        signatures=dict(serving_default="images uint8 [B,H,W,3] → embedding float32 [B,D]",
                        serve_encoded="encoded string [B] (JPEG/PNG) → embedding"))
    write_json(staging / CARD, card)
    (staging / "README.md").write_text(_readme(card))
    verified_files(staging.name, staging.parent)
    _swap_into_place(staging, entry)
    return entry


def _run_metrics(run_dir):
    """The run's metrics.json (train.py's), or {} where there is none."""
    path = pathlib.Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _recorded_training(run_dir):
    """{train_hours, segments} from the run's metrics.json (the processes that trained it:
    host CPU, steps, seconds), or {} for a run without them."""
    metrics = _run_metrics(run_dir)
    if "train_seconds" not in metrics:
        return {}
    return dict(train_hours=round(metrics["train_seconds"] / 3600, 3),
                segments=metrics.get("segments", []))


def _recorded_knn(run_dir, train_examples, test_examples):
    """The kNN top-1 of the pretrained encoder that train.py recorded in the run's
    metrics.json with the zoo's protocol (k = 200, T = 0.1) on the same examples, or None."""
    knn = _run_metrics(run_dir).get("knn") or {}
    same = (knn.get("k") == 200 and knn.get("temperature") == 0.1 and
            knn.get("train_examples") == train_examples and knn.get("test_examples") == test_examples)
    return knn.get("pretrained") if same else None


def _swap_into_place(staging, entry):
    """Renames the complete `staging` folder to `entry`; an existing entry is moved aside
    first and removed only after the rename succeeded (restored if it failed)."""
    old = entry.with_name(f".{entry.name}.replaced")
    shutil.rmtree(old, ignore_errors=True)
    if entry.exists():
        os.rename(entry, old)
    try:
        os.rename(staging, entry)
    except BaseException:
        if old.exists() and not entry.exists():
            os.rename(old, entry)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _host_text(host):
    if not host:
        return ""
    return f" ({host['cpu']}, {host['cores']} cores, {', '.join(host['isa']) or 'no AVX2'})"


def _training_text(pretraining):
    """'Training took H hours … (h on host; …)' from the card's segments ('' without them)."""
    segments = pretraining.get("segments") or []
    if not segments:
        return ""
    hours_on = {}  # host text → hours
    for segment in segments:
        name = _host_text(segment).strip(" ()")
        hours_on[name] = hours_on.get(name, 0.0) + segment["train_seconds"] / 3600
    where = "; ".join(f"{hours:.2f} h on {name}" for name, hours in hours_on.items())
    return (f"Training took {pretraining['train_hours']:.2f} hours inside `fit` in "
            f"{len(segments)} segment{'s' * (len(segments) > 1)} ({where}).\n\n")


def _readme(card):
    r, p = card["results"], card["pretraining"]
    pictures = "".join(f"![{pathlib.Path(name).stem}]({name})\n\n"
                       for name in card.get("pictures", []))
    return (f"# {card['name']}\n\nBYOL-pretrained `{card['architecture']}` "
            f"({card['representation_dim']}-d representation, {card['image_size']} px) on "
            f"`{card['dataset']}`: {p['epochs']} epochs, batch {p['batch_size']}, "
            f"recipe {json.dumps(p['recipe'])}; pretrained by `python {p['command']}`.\n\n"
            f"{_training_text(p)}"
            f"| evaluation | top-1 |\n|---|---|\n| kNN ({r['knn_protocol']}) | {r['knn_top1']:.4f} |\n"
            f"| linear ({r['linear_protocol']}) | {r['linear_top1']:.4f} |\n\n"
            f"Measured on {r['train_examples']} train / {r['test_examples']} test images by "
            f"`{r['command']}` on {card['date']}"
            f"{_host_text(card['versions'].get('host'))}.\n\n{pictures}"
            f"```python\nimport byol_tf\nencoder = byol_tf.zoo.load({card['name']!r})  "
            f"# uint8 images → embedding\n```\n\nFiles and their sha256: `{CARD}`.\n")
