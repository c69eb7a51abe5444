"""Training recipes as data, one per dataset. `byol-train --recipe=NAME` starts from one;
any flag given on the command line overrides it. (Until 0.1.0 `--preset`; a preset is now a
zoo entry only, as in keras-hub.)

- imagenet2012: the paper / DeepMind's official config (1000 epochs, batch 4096, LARS
  base LR 0.2, wd 1.5e-6, τ_base 0.996, 10 warm-up epochs, 224 px).
- cifar10 / cifar100 / stl10: the recipe used for small images by solo-learn and
  lightly (LARS base LR 1.0, wd 1e-5, τ_base 0.99), ResNet-18 with the CIFAR stem.
- cifar10_cpu: CIFAR-10 on a CPU in hours, not days: the ~0.3 M-parameter ResNet at batch
  128, AdamW (base LR 2e-3, no warm-up), no Gaussian blur (at 32 px it mostly erases the
  image; the common CIFAR choice). Chosen by measurement at short budgets (bench/results/recipes_cpu_2core.md).
- cifar10_cpu_short: cifar10_cpu for budgets of a few epochs: crops of at least 20% of
  the image instead of 8% (at 32 px the smallest crops leave little to match). Measured
  against byol-pytorch at equal steps (docs/benchmarks.md).
- sample: the embedded default: a ~0.3 M-parameter ResNet on the bundled 2,000
  CIFAR-10 images, a few minutes on a 2-core CPU.
- folder_cpu: a folder of images on a machine without a GPU or TPU: cifar10_cpu_short's
  ResNet, views and optimizer at 64 px, trained with SimCLR (in minutes on real photos it
  learned faster than BYOL; `--method=byol` trains BYOL), for FOLDER_CPU_IMAGES images in all
  (epochs = that / the folder's images, 1 to 100; the batch halved for folders smaller than
  it): about 6 minutes on 2 cores (bench/results/imagenette_mini_cpu.md).
- folder: a folder with a GPU or TPU: the STL-10 recipe (ResNet-18 at 96 px, batch 256);
  folders of LARGE_FOLDER images or more get imagenet2012's.

A recipe's "method" (default "byol") is the `--method` it trains unless one is given.
"""

from byol_tf import augment


def merge_method_options(recipe_options, options):
    """The method options of a run: `options` over the recipe's; a view given in part
    ({"view1": {"crop_area": [0.2, 1.0]}}) changes only those keys of the recipe's view (or
    of the paper's, augment.VIEW1 / VIEW2), in canonical (JSON) form. ValueError names a
    bad view."""
    merged = {**recipe_options, **options}
    for view, paper in (("view1", augment.VIEW1), ("view2", augment.VIEW2)):
        if view in options:
            if not isinstance(options[view], dict):
                raise ValueError(f"{view} must be a JSON object")
            try:
                merged[view] = augment.check_config({**recipe_options.get(view, paper),
                                                     **options[view]})
            except ValueError as e:
                raise ValueError(f"{view}: {e}") from None
    return merged


RECIPES = {
    "imagenet2012": dict(encoder="resnet50", image_size=224, epochs=1000, batch_size=4096,
                         base_lr=0.2, weight_decay=1.5e-6, tau_base=0.996, warmup_epochs=10,
                         optimizer="lars", hidden_dim=4096, projection_dim=256),
    "cifar10": dict(encoder="resnet18_cifar", image_size=32, epochs=800, batch_size=512,
                    base_lr=1.0, weight_decay=1e-5, tau_base=0.99, warmup_epochs=10,
                    optimizer="lars", hidden_dim=4096, projection_dim=256),
    "stl10": dict(encoder="resnet18", image_size=96, epochs=400, batch_size=256,
                  base_lr=1.0, weight_decay=1e-5, tau_base=0.99, warmup_epochs=10,
                  optimizer="lars", hidden_dim=4096, projection_dim=256),
    "sample": dict(encoder="tiny_resnet_cifar", image_size=32, epochs=25, batch_size=128,
                   base_lr=1.0, weight_decay=1e-5, tau_base=0.99, warmup_epochs=2,
                   optimizer="lars", hidden_dim=1024, projection_dim=128),
}
RECIPES["cifar100"] = dict(RECIPES["cifar10"])
RECIPES["cifar10_cpu"] = dict(
    RECIPES["sample"], epochs=150, optimizer="adamw", base_lr=2e-3, weight_decay=1e-6,
    warmup_epochs=0, method_options=dict(  # (canonical JSON form: a resume compares configs)
        view1=augment.check_config(dict(augment.VIEW1, blur_prob=0.0)),
        view2=augment.check_config(dict(augment.VIEW2, blur_prob=0.0))))
RECIPES["cifar10_cpu_short"] = dict(
    RECIPES["cifar10_cpu"], epochs=10, method_options=merge_method_options(
        RECIPES["cifar10_cpu"]["method_options"],
        dict(view1=dict(crop_area=[0.2, 1.0]), view2=dict(crop_area=[0.2, 1.0]))))


RECIPES["folder_cpu"] = dict(RECIPES["cifar10_cpu_short"], image_size=64, epochs=50,
                             method="simclr")
RECIPES["folder"] = dict(RECIPES["stl10"])
FOLDER_CPU_IMAGES = 50_000
LARGE_FOLDER = 200_000


def for_dataset(name):
    """The recipe for a dataset name (unknown names get the ImageNet recipe)."""
    return dict(RECIPES.get(name, RECIPES["imagenet2012"]))


def for_folder(num_images, accelerator):
    """(preset name, recipe) for a folder of `num_images` images on a machine with
    (`accelerator`) or without a GPU/TPU."""
    if accelerator:
        name = "imagenet2012" if num_images >= LARGE_FOLDER else "folder"
        return name, dict(RECIPES[name])
    epochs = int(min(100, max(1, round(FOLDER_CPU_IMAGES / max(num_images, 1)))))
    batch = RECIPES["folder_cpu"]["batch_size"]
    while batch > 2 and batch > num_images:  # a batch needs that many images
        batch //= 2
    return "folder_cpu", dict(RECIPES["folder_cpu"], epochs=epochs, batch_size=batch)
