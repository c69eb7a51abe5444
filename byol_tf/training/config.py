"""A run's config: the dataset's recipe (`byol_tf.training.presets`) overridden by every
option given, validated whole before anything is written."""

import json

HYPERPARAMETERS = ("encoder", "image_size", "epochs", "batch_size", "base_lr", "weight_decay",
                   "tau_base", "warmup_epochs", "optimizer", "hidden_dim", "projection_dim")


class ConfigError(ValueError):
    """A bad option; the message names it (train.py reports it as a usage error)."""


def count_images(folder):
    """The image files under `folder` (recursively), by extension."""
    import pathlib

    from byol_tf.data.folders import IMAGE_EXTENSIONS

    return sum(1 for p in pathlib.Path(folder).expanduser().rglob("*")
               if p.suffix.lower() in IMAGE_EXTENSIONS)


def resolve(options, accelerator=False):
    """`options` (train.py's flags, or any object with the same attributes; None = unset) →
    the run config (a dict of JSON values); a folder without --preset gets
    `presets.for_folder` of its image count on a machine with or without an `accelerator`.
    Raises ConfigError naming a bad option."""
    import pathlib

    from byol_tf.training import presets

    name = options.preset or options.dataset
    if options.preset and options.preset not in presets.PRESETS:
        raise ConfigError(f"--preset={options.preset}: unknown; known: {sorted(presets.PRESETS)}")
    if not options.preset and pathlib.Path(options.dataset).expanduser().is_dir():
        name, config = presets.for_folder(count_images(options.dataset), accelerator)
    else:
        config = presets.for_dataset(name)
    for key in HYPERPARAMETERS:
        if getattr(options, key) is not None:
            config[key] = getattr(options, key)
    try:
        method_options = json.loads(options.method_options or "{}")
    except json.JSONDecodeError as e:
        raise ConfigError(f"--method_options is not valid JSON: {e}") from None
    if not isinstance(method_options, dict):
        raise ConfigError("--method_options must be a JSON object")
    # A preset may carry method options (e.g. its views); the option's keys override them (a
    # view given in part changes only those keys of the preset's view).
    try:
        method_options = presets.merge_method_options(config.pop("method_options", {}),
                                                      method_options)
    except ValueError as e:
        raise ConfigError(f"--method_options {e}") from None
    config.update(method=options.method, method_options=method_options)
    config.update(dataset=options.dataset, data_dir=options.data_dir, split=options.split,
                  preset=name if name in presets.PRESETS else "imagenet2012",
                  seed=options.seed, steps_per_epoch=options.steps_per_epoch,
                  jit_compile=options.jit_compile, skip_bad_images=options.skip_bad_images)
    for key in ("epochs", "batch_size", "image_size", "hidden_dim", "projection_dim"):
        if config[key] is not None and config[key] < 1:
            raise ConfigError(f"--{key} must be ≥ 1; got {config[key]}")
    if config["base_lr"] <= 0 or config["weight_decay"] < 0 or config["warmup_epochs"] < 0:
        raise ConfigError("--base_lr must be > 0, --weight_decay and --warmup_epochs ≥ 0")
    if not 0.0 <= config["tau_base"] <= 1.0:
        raise ConfigError(f"--tau_base must be in [0, 1]; got {config['tau_base']}")
    return config


def view_configs(config):
    """The (view1, view2) augmentation configs a run config gives its model (and its
    tf.data pipeline, for sources that crop per image): `method_options`' or the paper's."""
    from byol_tf import augment

    options = config.get("method_options") or {}
    return augment.view_configs(options.get("view1"), options.get("view2"))
