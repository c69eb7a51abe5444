"""Publishing zoo entries: an encoder and its results → a folder `byol_tf.zoo` loads.

    publish(encoder, card, name, root, saved_model=None, pictures=())   # objects → entry
    publish_run(run_dir, name, root, ...)                               # a finished run → entry

An entry holds `encoder.keras`, `saved_model/` (the run's export, copied; exported once when
there is none), the run's pictures, `model_card.json` (the caller's card completed with the
date, versions, signatures and every file's sha256) and `README.md`. It is built under a
hidden name beside the zoo and renamed into place only when complete, so a failed publish
loses nothing (an entry being replaced is kept until then). Publishing to a remote handle
is a copy of that folder (any static web server, a `gs://` bucket): it then loads by its URL.
"""

import datetime
import json
import os
import pathlib
import shutil


import byol_tf
from byol_tf import data, evaluation, export, hub, model_files, zoo
from byol_tf.files import hold_lock, sha256_file, write_json, write_text
from byol_tf.image_encoder import as_image_encoder
from byol_tf.training.config import ConfigError
from byol_tf.records import versions
from byol_tf.training.run_folder import RunFolder

PICTURES = ("curves.png", "neighbours.png")  # a run's pictures that its entry shows
SIGNATURES = dict(serving_default="images uint8 [B,H,W,3] → embedding float32 [B,D]",
                  serve_encoded="encoded string [B] (JPEG/PNG) → embedding")


def publish(encoder, card, name, root, saved_model=None, pictures=(), overwrite=False,
            replaces=None):
    """Writes the entry `root/name`; returns its folder.

    Args:
      encoder: the `ImageEncoder` (or anything `as_image_encoder` accepts).
      card: dict, what the entry is (architecture, dataset, pretraining, results, ...).
      saved_model: the encoder's SavedModel folder to copy; None: exported here.
      pictures: image files to copy into the entry (listed in the card).
      overwrite: replace an existing entry, whoever published it.
      replaces: a run id: replace an existing entry only if that run published it (checked
        under the entry's lock, when the entry is written).
    Raises FileExistsError when the entry exists and may not be replaced.
    """
    hub.check_entry_name(name)
    entry = pathlib.Path(root) / name
    # One writer per entry; what a killed writer left is put back or removed under the lock.
    hold_lock(hub.entry_lock(entry), f"zoo entry {entry}")
    hub.restore_replaced(entry)
    for leftover in entry.parent.glob(f".{name}.staging-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if entry.exists() and not overwrite:
        owner = _publisher(entry)
        if replaces is None or owner != replaces:
            raise FileExistsError(f"zoo entry {entry} exists, published by "
                                  f"{'run ' + owner if owner else 'another run'}; "
                                  "choose another name" + (
                                      "" if replaces else " or pass overwrite=True"))
    encoder = as_image_encoder(encoder)
    staging = entry.with_name(f".{name}.staging-{os.getpid()}")
    try:
        _write_entry(encoder, card, name, staging, saved_model, pictures)
        _swap_into_place(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def _publisher(entry):
    """The run id on the card of the entry folder `entry` (None when it has none or none reads)."""
    try:
        return hub.read_card(entry / zoo.CARD, entry.name).get("pretraining", {}).get("run_id")
    except ValueError:
        return None


def _write_entry(encoder, card, name, staging, saved_model, pictures):
    staging.mkdir(parents=True)
    encoder.save(staging / "encoder.keras")
    if saved_model is not None:
        shutil.copytree(saved_model, staging / "saved_model")
    else:
        export.export_encoder(encoder, staging / "saved_model")
    for picture in pictures:
        shutil.copyfile(picture, staging / pathlib.Path(picture).name)
    files = {str(p.relative_to(staging)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(staging.rglob("*")) if p.is_file()}
    card = dict(card, name=name, representation_dim=int(encoder.representation_dim),
                pictures=[pathlib.Path(p).name for p in pictures],
                date=datetime.date.today().isoformat(), versions=versions(), files=files,
                signatures=SIGNATURES)
    write_json(staging / zoo.CARD, card)
    write_text(staging / "README.md", _readme(card))
    hub.verify(staging, hub.read_card(staging / zoo.CARD, name)["files"], name)


def check_name(name, run_dir, root):
    """Raises ConfigError when entry `root/name` exists and was not published from `run_dir`
    or `name` is not a plain entry name (checked before a run trains)."""
    try:
        hub.check_entry_name(name, f"--publish={name}")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if (pathlib.Path(root) / name).exists() and not published_from(name, run_dir, root):
        raise ConfigError(f"--publish: zoo entry {pathlib.Path(root) / name} exists and was "
                          "not published from this run; choose another name")


def published_from(name, run_dir, root):
    """True if entry `name` exists and was published from the run in `run_dir`."""
    try:
        card = zoo.info(name, root)
    except ValueError:
        return False
    run_id = RunFolder(run_dir).run_id()
    return run_id is not None and card.get("pretraining", {}).get("run_id") == run_id


def publish_run(run_dir, name, root=None, linear_epochs=10, overwrite=False, eval_dataset=None,
                verbose=0, replace_own=False):
    """Publishes a finished `train.py` run as `root/name` (default `<run_dir>/zoo`): its
    encoder, its SavedModel and pictures, the kNN it measured (measured here when it did not
    measure it on the whole evaluation data) and a linear evaluation (`verbose` as Keras'
    `fit`: its progress). An existing entry is replaced with `overwrite`, or with
    `replace_own` when this run published it (checked when the entry is written). Returns the
    entry."""
    folder = RunFolder(run_dir)
    record = folder.config_record()
    if record is None:
        raise ValueError(f"{run_dir} is not a run folder (no config.json)")
    config, metrics = record["config"], folder.metrics()
    encoder = as_image_encoder(model_files.load_model(folder.path / "encoder.keras"),
                               config["image_size"])
    folder_source = data.Source.of(config["dataset"]).kind == "folder"
    source = data.Source.of(
        config["dataset"], data_dir=config["data_dir"],
        eval_folder=eval_dataset if folder_source else None,
        skip_bad_images=config.get("skip_bad_images", False) and folder_source,
        max_image_pixels=config.get("max_image_pixels", data.MAX_IMAGE_PIXELS))
    x_train, y_train, x_test, y_test = data.load_arrays(source, image_size=config["image_size"])
    knn = metrics.get("knn") or {}
    if (knn.get("train_examples"), knn.get("test_examples")) != (len(x_train), len(x_test)):
        knn = dict(pretrained=evaluation.knn_accuracy(encoder, x_train, y_train, x_test, y_test,
                                                      verbose=verbose), k=200, temperature=0.1)
    if verbose:
        print(f"Linear evaluation for the zoo entry {name!r} ({linear_epochs} epochs):")
    linear = evaluation.supervised_eval(encoder, x_train, y_train, x_test, y_test,
                                        protocol="linear", epochs=linear_epochs,
                                        batch_size=min(256, len(x_train)), verbose=verbose)
    recipe = {k: config[k] for k in ("optimizer", "base_lr", "weight_decay", "tau_base",
                                     "warmup_epochs", "hidden_dim", "projection_dim", "seed")}
    # What the model was built with: the method options win over the flags (build_method).
    recipe.update({k: v for k, v in (config.get("method_options") or {}).items() if k in recipe})
    pretraining = dict(
        epochs=config["epochs"], batch_size=config["batch_size"], steps=config["total_steps"],
        accumulation_steps=config.get("accumulation_steps", 1),
        recipe=recipe,
        method=config.get("method", "byol"), method_options=config.get("method_options", {}),
        command=" ".join(record.get("command", [])), run_id=folder.run_id(),
        versions=record.get("versions", {}))
    if config.get("parent"):  # started from a zoo entry (--init_from)
        pretraining["parent"] = config["parent"]
    if "train_seconds" in metrics:
        pretraining.update(train_hours=round(metrics["train_seconds"] / 3600, 3),
                           segments=metrics.get("segments", []))
    card = dict(
        architecture=config["encoder"], image_size=config["image_size"],
        dataset=config["dataset"], pretraining=pretraining,
        results=dict(
            knn_top1=knn["pretrained"],
            knn_protocol=f"k={knn['k']}, cosine, T={knn['temperature']}, frozen encoder",
            linear_top1=linear["top1"], linear_top5=linear["top5"],
            linear_protocol=f"frozen encoder, SGD Nesterov 0.9, cosine LR 0.2·batch/256, "
                            f"crop+flip, {linear_epochs} epochs",
            train_examples=len(x_train), test_examples=len(x_test),
            command=f"byol_tf.training.publish.publish_run({str(run_dir)!r}, {name!r}, "
                    f"linear_epochs={linear_epochs})"))
    exported = folder.done("export") and export.is_complete(
        folder.export_path, folder.done("export").get("sha256"))
    return publish(encoder, card, name, root or folder.path / "zoo",
                   saved_model=folder.export_path if exported else None,
                   pictures=[folder.path / p for p in PICTURES if (folder.path / p).is_file()],
                   overwrite=overwrite, replaces=folder.run_id() if replace_own else None)


def registry_record(folder, handle):
    """The registry's record of the entry in `folder` (`byol_tf/zoo_registry.json`): what it
    is, its results, where it is (`handle`) and the sha256 of every file, the card's too."""
    folder = pathlib.Path(folder)
    card = hub.read_card(folder / zoo.CARD, folder.name)
    imported = hub.imported(card)
    files = {**card.get("files", {}), zoo.CARD: {"sha256": sha256_file(folder / zoo.CARD),
                                                 "bytes": (folder / zoo.CARD).stat().st_size}}
    if imported:
        parameters = byol_tf.encoders.get(card["architecture"]).count_params()
        description = (f"DeepMind's BYOL {card['architecture']} on {card['dataset']}, converted "
                       "from the official checkpoint on first use")
    else:
        encoder = model_files.load_model(folder / "encoder.keras")
        parameters = encoder.encoder.count_params()
        description = (f"BYOL-pretrained {card['architecture']} on {card['dataset']} "
                       f"({card['pretraining']['epochs']} epochs)")
    results = {k: v for k, v in card.get("results", {}).items() if isinstance(v, (int, float))}
    return dict(description=description, architecture=card["architecture"],
                parameters=int(parameters), image_size=card["image_size"],
                representation_dim=card["representation_dim"], dataset=card["dataset"],
                results=results, handle=handle, files=dict(sorted(files.items())))


def _swap_into_place(staging, entry):
    """Renames the complete `staging` folder to `entry`; an existing entry is moved aside
    first and removed only after the rename succeeded (restored if it failed)."""
    old = hub.replaced_name(entry)
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


def _parent_text(pretraining):
    """'Started from the zoo entry …' for a run that started from one ('' otherwise)."""
    parent = pretraining.get("parent")
    if not parent:
        return ""
    return (f"Started from the zoo entry `{parent['name']}` (`{parent['handle']}`, "
            f"{parent['architecture']} trained on `{parent['dataset']}`), then trained on "
            "this data: ")


def _readme(card):
    r, p = card["results"], card["pretraining"]
    pictures = "".join(f"![{pathlib.Path(name).stem}]({name})\n\n"
                       for name in card.get("pictures", []))
    name = card["name"]
    loaded = name if name in hub.registry() else f"path/to/{name}"
    return (f"# {name}\n\nA `{card['architecture']}` image encoder ({card['representation_dim']}-d "
            f"embedding of {card['image_size']}-px images) pretrained without labels by "
            f"{p['method'].upper()} on `{card['dataset']}`: for image features, nearest-neighbour "
            f"search and transfer by linear probing or fine-tuning on images like its data.\n\n"
            f"## Use\n\n```python\nimport byol_tf, keras\n\n"
            f"encoder = byol_tf.zoo.load({loaded!r})  # uint8 images [B, H, W, 3] → [B, "
            f"{card['representation_dim']}]\n\n"
            f"# Fine-tuning: the same encoder, trainable, under a new head.\n"
            f"num_classes = 10  # your task's\n"
            f"tunable = byol_tf.zoo.load({loaded!r}, trainable=True)\n"
            f"images = keras.Input(({card['image_size']}, {card['image_size']}, 3), "
            f"dtype=\"uint8\")\n"
            f"classifier = keras.Model(images, keras.layers.Dense(num_classes)(tunable(images)))\n"
            f"```\n\n"
            f"Or by handle: this folder's path or URL (`https://`, `file://`, `gs://`). "
            f"`saved_model/` serves the same model with TF Serving.\n\n"
            f"## Training\n\n{_parent_text(p)}{p['epochs']} epochs, batch {p['batch_size']}, recipe "
            f"{json.dumps(p['recipe'])}; `{p['command']}`.\n\n{_training_text(p)}"
            f"## Evaluation\n\n| evaluation | top-1 |\n|---|---|\n"
            f"| kNN ({r['knn_protocol']}) | {r['knn_top1']:.4f} |\n"
            f"| linear ({r['linear_protocol']}) | {r['linear_top1']:.4f} |\n\n"
            f"On {r['train_examples']} train / {r['test_examples']} test images of the same data, "
            f"measured by `{r['command']}` on {card['date']}"
            f"{_host_text(card['versions'].get('host'))}.\n\n{pictures}"
            f"## Limits\n\nLearned from `{card['dataset']}` alone, at {card['image_size']} px: "
            f"expect weaker features on images unlike it. The results above are this run's, one "
            f"seed.\n\n## Citation and licence\n\nGrill et al., \"Bootstrap Your Own Latent: A "
            f"New Approach to Self-Supervised Learning\", NeurIPS 2020. The weights are released "
            f"under the Apache-2.0 licence, as byol_tf; the data's own terms apply to what it "
            f"depicts.\n\nFiles and their sha256: `{zoo.CARD}`.\n")
