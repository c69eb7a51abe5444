"""A run's config, resolved once: from the options (train.py's flags), the recipe
(`byol_tf.training.recipes`), the data source and the host — and, for a resumed run, the
config it recorded — into one `RunConfig`, validated whole before anything is written,
recorded in `config.json` as it is and never changed afterwards.

`--image_size` of a source whose images all have one size (the sample, CIFAR, STL-10,
arrays): the views are cropped from the images and resized to that side, and evaluation
images are resized to it (the model's input contract); left unset, the side is the
source's. Of a folder: the side of the crops taken from each image (the recipe's when unset).
"""

import dataclasses
import json
import math
import os

HYPERPARAMETERS = ("encoder", "image_size", "epochs", "batch_size", "base_lr", "weight_decay",
                   "tau_base", "warmup_epochs", "optimizer", "hidden_dim", "projection_dim")
# Flags whose spelling in the library's errors (`byol_tf.data.DataError`) differs.
FLAG_OF_ARGUMENT = {"skip_bad_images=True": "--skip_bad_images", "eval_folder": "--eval_dataset",
                    "data_dir": "--data_dir", "split": "--split",
                    "max_image_pixels": "--max_image_pixels", "image_size": "--image_size"}


class ConfigError(ValueError):
    """A bad option; the message names it (train.py reports it as a usage error)."""


def in_flag_terms(error):
    """A library error's message with its arguments named as train.py's flags."""
    message = str(error)
    for argument in sorted(getattr(error, "arguments", ()), key=len, reverse=True):
        message = message.replace(argument, FLAG_OF_ARGUMENT.get(argument, f"--{argument}"))
    return message


@dataclasses.dataclass(frozen=True)
class Host:
    """What the run's machine offers: a GPU or TPU, the memory it may use (None: unknown),
    the Keras backend, the replicas of the run's strategy."""

    accelerator: bool = False
    available_bytes: int | None = None
    backend: str = "tensorflow"
    replicas: int = 1


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run uses. The fields down to `precision` decide the weights (`TRAINING`,
    compared when a run resumes); the others are this command's (evaluation, checkpoints,
    time limit, publishing) and may differ between the segments of one run."""

    # The data (byol_tf.data.Source)
    dataset: str
    source_kind: str
    data_dir: str | None
    split: str | None
    skip_bad_images: bool
    max_image_pixels: int
    num_examples: int
    num_classes: int | None
    # The recipe, after the options
    recipe: str
    encoder: str
    image_size: int
    epochs: int
    batch_size: int
    base_lr: float
    weight_decay: float
    tau_base: float
    warmup_epochs: float
    optimizer: str
    hidden_dim: int
    projection_dim: int
    method: str
    method_options: dict
    init_from: str | None  # a zoo entry (name or handle) the encoders start from
    accumulation_steps: int  # micro-batches of batch_size / N per optimizer step
    steps_per_epoch: int
    total_steps: int
    # How it runs
    seed: int
    jit_compile: bool
    strategy: str
    tpu: str | None
    replicas: int
    deterministic: bool
    precision: str
    # This command's
    run_dir: str
    eval_dataset: str | None
    knn: bool
    knn_random_init: bool
    knn_k: int
    knn_every: int
    max_eval_examples: int | None
    checkpoint_every: int
    keep_checkpoints: int
    time_limit_minutes: float | None
    time_budget_minutes: float | None
    budget: dict | None  # the budget's decision (`byol_tf.training.budget`), when one was given
    parent: dict | None  # what `init_from` names: its card's name, architecture, data, results
    publish: str | None
    zoo_dir: str | None
    publish_linear_epochs: int
    final_weights_npz: str | None

    @property
    def micro_batch_size(self):
        """The batch of one forward pass (and of batch norm): batch_size / accumulation_steps."""
        return self.batch_size // self.accumulation_steps

    @property
    def batches_per_epoch(self):
        """`fit`'s steps in an epoch: the optimizer's steps × `accumulation_steps`."""
        return self.steps_per_epoch * self.accumulation_steps

    @property
    def total_batches(self):
        """The micro-batches of the whole run (`fit`'s steps, the stream's length)."""
        return self.total_steps * self.accumulation_steps

    @property
    def warmup_steps(self):
        return min(round(self.warmup_epochs * self.steps_per_epoch), self.total_steps - 1)

    def source(self):
        """The `byol_tf.data.Source` trained on."""
        from byol_tf.data import Source

        return Source.of(self.dataset, data_dir=self.data_dir, split=self.split,
                         skip_bad_images=self.skip_bad_images,
                         max_image_pixels=self.max_image_pixels)

    def eval_source(self):
        """The `Source` the evaluations read (a folder's with its labelled test folder)."""
        if self.source_kind != "folder":
            return self.source()
        return dataclasses.replace(self.source(), eval_folder=self.eval_dataset)

    def record(self):
        """The config as JSON values (what `config.json` holds)."""
        return dataclasses.asdict(self)

    def training(self):
        return {k: v for k, v in self.record().items() if k in TRAINING}

    def differences(self, recorded):
        """The training fields in which a recorded config (this release's, or 0.1.0's:
        `upgraded`) differs from this one."""
        recorded = upgraded(recorded)
        mine = self.training()
        return sorted(k for k in recorded if k in TRAINING and recorded[k] != mine[k])


TRAINING = tuple(f.name for f in dataclasses.fields(RunConfig))[
    :[f.name for f in dataclasses.fields(RunConfig)].index("precision") + 1]


def upgraded(recorded):
    """A recorded config in this release's names: 0.1.0 called the recipe "preset"."""
    recorded = dict(recorded)
    if "preset" in recorded and "recipe" not in recorded:
        recorded["recipe"] = recorded.pop("preset")
    return recorded


def finite(name, value, low, low_inclusive=True):
    if value is None:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value)) or (
            value < low if low_inclusive else value <= low):
        bound = f"≥ {low}" if low_inclusive else f"> {low}"
        raise ConfigError(f"--{name} must be a finite number {bound}; got {value}")


def resolve(options, given=None, host=Host(), previous=None, run_dir=None, budget=None):
    """The `RunConfig` of a run, and the lines to print about what was chosen for the user.

    Args:
      options: train.py's flags, or any object with the same attributes.
      given: the names of the options given explicitly (None: every option that is not
        None). A recipe's value is kept unless its option is given.
      host: `Host`: a folder's recipe and the batch that fits depend on it.
      previous: the config a resumed run recorded (its batch is kept), or None.
      run_dir: the run folder (None: `options.run_dir`, else `default_run_dir`).
      budget: with `--time_budget_minutes`, the decision of `byol_tf.training.budget` (a
        dict with the planned "steps"); a resumed run's is the one it recorded. Without it
        the epochs are the recipe's (a budgeted run measures with such a config first).
    Raises ConfigError naming a bad option, before anything is written.
    """
    from byol_tf.data import DataError, Source
    from byol_tf.training import recipes

    def value(name):
        return getattr(options, name)

    if given is None:
        given = {name for name in vars(options) if value(name) is not None} if hasattr(
            options, "__dict__") else set()
    given = set(given)
    notes = []
    recipe_name = value("recipe") if hasattr(options, "recipe") else None
    alias = getattr(options, "preset", None)
    if alias is not None:
        if recipe_name is not None and recipe_name != alias:
            raise ConfigError(f"--preset={alias} and --recipe={recipe_name}: --preset is the old "
                              "name of --recipe; give one")
        recipe_name = alias
        notes.append(f"--preset is now --recipe (a preset is a zoo entry): using --recipe={alias}.")
    if recipe_name is not None and recipe_name not in recipes.RECIPES:
        raise ConfigError(f"--recipe={recipe_name}: unknown; known: {sorted(recipes.RECIPES)}")
    for name, low in (("accumulation_steps", 1), ("max_image_pixels", 1), ("knn_k", 1),
                      ("keep_checkpoints", 1), ("publish_linear_epochs", 1), ("seed", 0),
                      ("knn_every", 0)):
        if value(name) is not None and value(name) < low:
            raise ConfigError(f"--{name} must be ≥ {low}; got {value(name)}")
    for name in ("steps_per_epoch", "checkpoint_every", "max_eval_examples"):
        if value(name) is not None and value(name) < 1:
            raise ConfigError(f"--{name} must be ≥ 1 (leave it unset for the default); got "
                              f"{value(name)}")
    finite("time_limit_minutes", value("time_limit_minutes"), 0, low_inclusive=False)
    budget_minutes = value("time_budget_minutes")
    finite("time_budget_minutes", budget_minutes, 0, low_inclusive=False)
    if budget_minutes:
        for name in ("epochs", "time_limit_minutes", "steps_per_epoch"):
            if value(name) is not None and (name in given or name == "time_limit_minutes"):
                raise ConfigError(f"--{name} and --time_budget_minutes: the budget sizes the "
                                  f"run (its epochs and steps) to end within "
                                  f"{budget_minutes:g} minutes; give one of the two")
        if value("strategy") == "multi_worker":
            raise ConfigError("--time_budget_minutes: each worker would size the run by its "
                              "own measurement; give the workers --epochs")
    recorded_budget = (previous or {}).get("budget")
    if previous is not None and (previous.get("time_budget_minutes") or None) != budget_minutes:
        if recorded_budget or budget_minutes:
            was = (f"--time_budget_minutes={previous['time_budget_minutes']:g}"
                   if recorded_budget else "no --time_budget_minutes")
            raise ConfigError(f"{run_dir or value('run_dir')} holds a run started with {was}; "
                              "rerun it as it was started, or choose another run folder")
    budget = (recorded_budget or budget) if budget_minutes else None
    if value("time_limit_minutes") and value("strategy") == "multi_worker":
        raise ConfigError("--time_limit_minutes: each worker would stop by its own clock and "
                          "the others would wait for it; stop a multi-worker run from "
                          "outside (it resumes from its checkpoints)")
    if value("tpu") is not None and value("strategy") != "tpu":
        raise ConfigError("--tpu names the TPU of --strategy=tpu; add --strategy=tpu or drop --tpu")
    if host.backend != "tensorflow" and value("strategy") != "default":
        raise ConfigError(f"--strategy={value('strategy')} needs the tensorflow backend")

    try:
        source = Source.of(value("dataset"), data_dir=value("data_dir"), split=value("split"),
                           skip_bad_images=value("skip_bad_images"),
                           max_image_pixels=value("max_image_pixels"))
        num_examples, num_classes = source.examples()
    except DataError as error:
        raise ConfigError(in_flag_terms(error).replace("unknown dataset", "--dataset: unknown "
                                                       "dataset")) from None
    except ValueError as error:  # (a damaged .npz file)
        raise ConfigError(f"--dataset: {error}") from None
    if source.kind == "folder" and host.backend != "tensorflow":
        raise ConfigError(f"--dataset={source.name}: image folders are cropped per image in "
                          "tf.data, which needs the tensorflow backend")
    if value("eval_dataset") is not None:
        if source.kind != "folder":
            raise ConfigError(f"--eval_dataset is the labelled test folder of a --dataset that is "
                              f"a folder of images; {source.name!r} has its own test split")
        if not os.path.isdir(os.path.expanduser(value("eval_dataset"))):
            raise ConfigError(f"--eval_dataset: no such folder {value('eval_dataset')}")
    zoo_dir = value("zoo_dir") if hasattr(options, "zoo_dir") else None
    if zoo_dir and os.path.exists(os.path.expanduser(zoo_dir)) and not os.path.isdir(
            os.path.expanduser(zoo_dir)):
        raise ConfigError(f"--zoo_dir={zoo_dir} is a file, not a folder of zoo entries")
    if "knn" in given and value("knn") and not num_classes:
        raise ConfigError(f"--knn: {source.name} has no labels to evaluate with")
    knn = bool(value("knn")) and bool(num_classes)
    if not value("knn") and value("knn_every"):
        raise ConfigError(f"--knn_every={value('knn_every')} evaluates during training with "
                          "kNN, which --noknn turns off")
    if source.kind == "folder" and (knn or value("publish")):
        if not value("eval_dataset"):
            raise ConfigError(
                f"--knn and --publish evaluate on a labelled test split: pass --eval_dataset=<"
                f"folder with the class sub-folders of {source.name}>, or --noknn (and no "
                "--publish)")
        try:
            dataclasses.replace(source, eval_folder=value("eval_dataset")).check_eval_folder()
        except DataError as error:
            raise ConfigError(in_flag_terms(error)) from None

    # The recipe: a folder's is sized to it and to the host; the options override it.
    if recipe_name is None and source.kind == "folder":
        recipe_name, recipe = recipes.for_folder(num_examples, host.accelerator)
        notes.append(f"Recipe {recipe_name} for a folder of {num_examples} images"
                     f"{'' if host.accelerator else ' without a GPU'}: {recipe['encoder']} at "
                     f"{recipe['image_size']} px, batch {recipe['batch_size']}, "
                     f"{recipe['epochs']} epochs, {recipe['optimizer']}, "
                     f"{recipe.get('method', 'byol')} (flags override it).")
    else:
        recipe_name = recipe_name or (source.name if source.name in recipes.RECIPES
                                      else "imagenet2012")
        recipe = recipes.for_dataset(recipe_name)
    config = dict(recipe)
    init_from = value("init_from")
    parent = None
    if init_from:
        parent = parent_of(init_from)
        if "encoder" in given and value("encoder") != parent["architecture"]:
            raise ConfigError(f"--encoder={value('encoder')} and --init_from={init_from}: the "
                              f"entry is a {parent['architecture']}; drop --encoder (the "
                              "entry's architecture is used)")
        config["encoder"] = parent["architecture"]
        if "image_size" not in given and parent.get("image_size"):
            # a folder's crops at the side the entry learned (a fixed-size dataset keeps its
            # own): adapted at another side the entry lost accuracy (docs/own_images.md)
            config["image_size"] = parent["image_size"]
    if source.image_side and "image_size" not in given:
        config["image_size"] = source.image_side
    for key in HYPERPARAMETERS:
        if key in given and value(key) is not None:
            config[key] = value(key)
    try:
        method_options = json.loads(value("method_options") or "{}")
    except json.JSONDecodeError as e:
        raise ConfigError(f"--method_options is not valid JSON: {e}") from None
    if not isinstance(method_options, dict):
        raise ConfigError("--method_options must be a JSON object")
    try:  # a view given in part changes only those keys of the recipe's view
        method_options = recipes.merge_method_options(config.pop("method_options", {}),
                                                      method_options)
    except ValueError as e:
        raise ConfigError(f"--method_options {e}") from None
    from byol_tf import encoders

    if config["encoder"] not in encoders.ARCHITECTURES:
        raise ConfigError(f"--encoder={config['encoder']}: unknown; known: "
                          f"{', '.join(sorted(encoders.ARCHITECTURES))}")
    for key in ("epochs", "batch_size", "image_size", "hidden_dim", "projection_dim"):
        if config[key] < 1:
            raise ConfigError(f"--{key} must be ≥ 1; got {config[key]}")
    finite("base_lr", config["base_lr"], 0, low_inclusive=False)
    finite("weight_decay", config["weight_decay"], 0)
    finite("warmup_epochs", config["warmup_epochs"], 0)
    if not 0.0 <= config["tau_base"] <= 1.0:
        raise ConfigError(f"--tau_base must be in [0, 1]; got {config['tau_base']}")

    # The method: given, else a resumed run's own, else the objective the --init_from entry
    # learned with (adapting it goes on with it), else the recipe's.
    method = value("method") if "method" in given and value("method") else (
        (previous or {}).get("method") or (parent or {}).get("method")
        or config.get("method", "byol"))
    config.update(method=method, method_options=method_options)  # (the memory estimate's)

    # The batch: a resumed run keeps its own; a new one on a CPU gets one that fits.
    accumulation = value("accumulation_steps") or 1
    if accumulation > 1:
        if method == "moco":
            raise ConfigError("--accumulation_steps with --method=moco: its queue would take "
                              "one micro-batch's keys per optimizer step; train MoCo without it")
        if host.backend != "tensorflow":
            raise ConfigError("--accumulation_steps needs the tensorflow backend")
    if previous is not None and "batch_size" not in given:
        config["batch_size"] = previous.get("batch_size", config["batch_size"])
    elif accumulation > 1:  # the user's batch, split; its micro-batch must fit
        if config["batch_size"] % accumulation:
            raise ConfigError(f"--batch_size={config['batch_size']} is not a multiple of "
                              f"--accumulation_steps={accumulation}")
        if previous is None and not host.accelerator and host.available_bytes is not None:
            micro = dict(config, batch_size=config["batch_size"] // accumulation)
            fit_batch(micro, host.available_bytes, batch_given=True, flag=(
                f"--batch_size={config['batch_size']} / --accumulation_steps={accumulation}"))
    elif previous is None and not host.accelerator and host.available_bytes is not None:
        config["batch_size"], note = fit_batch(config, host.available_bytes,
                                               "batch_size" in given)
        notes += [note] if note else []
    if num_examples < config["batch_size"]:
        raise ConfigError(f"--dataset={source.name} has {num_examples} examples, fewer than "
                          f"one batch of {config['batch_size']} (--batch_size)")
    steps_per_epoch = num_examples // config["batch_size"]
    if value("steps_per_epoch"):
        steps_per_epoch = min(steps_per_epoch, value("steps_per_epoch"))
    if budget:  # the planned steps, in epochs of at most one pass
        from byol_tf.training.budget import epochs_of

        config["epochs"], steps_per_epoch = epochs_of(budget["steps"], steps_per_epoch)
    total_steps = steps_per_epoch * config["epochs"]
    if config["warmup_epochs"] * steps_per_epoch >= total_steps:
        notes.append(scale_warmup(config, recipe_name, "warmup_epochs" in given))

    resolved = RunConfig(
        dataset=source.name, source_kind=source.kind, data_dir=source.data_dir,
        split=source.split, skip_bad_images=source.skip_bad_images,
        max_image_pixels=source.max_image_pixels, num_examples=num_examples,
        num_classes=num_classes, recipe=recipe_name, **{k: config[k] for k in HYPERPARAMETERS},
        method=method, method_options=method_options, init_from=init_from or None,
        accumulation_steps=accumulation,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, seed=value("seed"), jit_compile=bool(value("jit_compile")),
        strategy=value("strategy"), tpu=value("tpu"), replicas=host.replicas,
        deterministic=bool(value("deterministic")), precision=value("precision"),
        run_dir=str(run_dir or value("run_dir") or default_run_dir(source.name)), eval_dataset=value("eval_dataset"), knn=knn,
        knn_random_init=bool(value("knn_random_init")), knn_k=value("knn_k"),
        knn_every=value("knn_every"), max_eval_examples=value("max_eval_examples"),
        checkpoint_every=value("checkpoint_every") or steps_per_epoch,
        keep_checkpoints=value("keep_checkpoints"),
        time_limit_minutes=value("time_limit_minutes"), time_budget_minutes=budget_minutes,
        budget=budget, parent=parent, publish=value("publish"),
        zoo_dir=value("zoo_dir"), publish_linear_epochs=value("publish_linear_epochs"),
        final_weights_npz=value("final_weights_npz"))
    return resolved, notes


def parent_of(handle):
    """What a run's `--init_from` names (a zoo entry by name, folder or URL; its card is
    read, not its weights): {handle, name, architecture, dataset, image_size, method (the
    entry's objective; a converted entry's: BYOL), knn_top1}.
    ConfigError when it is not an entry of an architecture byol_tf builds."""
    from byol_tf import encoders, zoo

    try:
        card = zoo.info(handle)
    except (ValueError, OSError) as error:
        raise ConfigError(f"--init_from={handle}: {error}") from None
    architecture = card.get("architecture")
    if architecture not in encoders.ARCHITECTURES:
        raise ConfigError(f"--init_from={handle}: its architecture {architecture!r} is not one "
                          f"byol_tf builds ({', '.join(sorted(encoders.ARCHITECTURES))})")
    return dict(handle=handle, name=card.get("name"), architecture=architecture,
                dataset=card.get("dataset"), image_size=card.get("image_size"),
                method=(card.get("pretraining") or {}).get("method") or "byol",
                knn_top1=(card.get("results") or {}).get("knn_top1"))


def fit_batch(config, available, batch_given, flag=None):
    """The batch size to train with on a machine with `available` bytes free: the config's
    when its estimate fits in 90% of them; otherwise (a batch from the recipe) the largest
    power-of-two fraction of it that fits, with a message saying so. Raises ConfigError (the
    estimate, what is free, the flags to change) when a `--batch_size` given by the user, or
    the smallest batch, does not fit; `flag` names a micro-batch's flags (the advice is then a
    larger --accumulation_steps). Returns (batch_size, message or None)."""
    from byol_tf.training.memory import SMALLEST_BATCH, gib, model_size, step_bytes

    batch = config["batch_size"]
    try:
        activations, parameters = model_size(config)
    except ValueError as e:
        raise ConfigError(f"--encoder={config['encoder']} at --image_size="
                          f"{config['image_size']}: {e}") from None
    budget = 0.9 * available
    need = step_bytes(batch, activations, parameters)
    if need <= budget:
        return batch, None
    fits = batch
    while fits > SMALLEST_BATCH and step_bytes(fits, activations, parameters) > budget:
        fits //= 2
    fitting = step_bytes(fits, activations, parameters) <= budget
    advice = (f"--batch_size={fits}" if fitting else
              "a smaller --image_size or --encoder (e.g. --encoder=tiny_resnet_cifar "
              "--image_size=64)")
    if flag:
        raise ConfigError(
            f"A micro-batch of {batch} ({flag}) with --encoder={config['encoder']} at "
            f"--image_size={config['image_size']} needs about {gib(need)} for a training step "
            f"(estimate); this machine has {gib(available)} available: use a larger "
            f"--accumulation_steps" + (f" (a micro-batch of {fits} fits)" if fitting else ""))
    if batch_given or not fitting:
        raise ConfigError(
            f"--batch_size={batch} with --encoder={config['encoder']} at --image_size="
            f"{config['image_size']} needs about {gib(need)} for a training step (estimate); "
            f"this machine has {gib(available)} available: use {advice}")
    return fits, (f"Batch {batch} of the recipe needs about {gib(need)} for a training step "
                  f"(estimate); this machine has {gib(available)} available: training with "
                  f"batch {fits} (the learning rate scales with it). --batch_size sets it.")


def default_run_dir(dataset):
    """runs/<dataset's name>-<date>-<time>."""
    import pathlib
    import time

    return f"runs/{pathlib.Path(dataset).name}-{time.strftime('%Y%m%d-%H%M%S')}"


def scale_warmup(config, recipe_name, given):
    """A warm-up as long as the run or longer becomes the recipe's share of its own length
    (10 of 1000 epochs: 1%), or 10% when `given` by option; changes `config` (a dict being
    resolved) and returns the line that says so."""
    from byol_tf.training import recipes

    recipe = recipes.RECIPES.get(recipe_name, {})
    warmup, epochs = config["warmup_epochs"], config["epochs"]
    share = (recipe["warmup_epochs"] / recipe["epochs"]
             if not given and recipe.get("epochs") else 0.1)
    config["warmup_epochs"] = round(share * epochs, 4)
    return (f"A warm-up of {warmup:g} epochs would last the whole {epochs}-epoch run: warming up "
            f"for {config['warmup_epochs']:g} epochs ({share:.0%} of the run) instead.")


def view_configs(config):
    """The (view1, view2) augmentation configs a run config (a `RunConfig`, or its record)
    gives its model (and its
    tf.data pipeline, for sources that crop per image): `method_options`' or the paper's."""
    from byol_tf import augment

    options = (config.get("method_options") if isinstance(config, dict)
               else config.method_options) or {}
    return augment.view_configs(options.get("view1"), options.get("view2"))
