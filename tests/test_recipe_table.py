"""Recipes as data: every preset is complete and builds; the paper's values are the defaults
at the paper's scale."""

import json

import pytest

from byol_tf import augment, encoders, optimizers
from byol_tf.training import recipes

KEYS = {"encoder", "image_size", "epochs", "batch_size", "base_lr", "weight_decay", "tau_base",
        "warmup_epochs", "optimizer", "hidden_dim", "projection_dim"}


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_every_preset_is_complete_and_names_real_parts(name):
    recipe = recipes.RECIPES[name]
    assert set(recipe) - {"method_options", "method"} == KEYS
    assert recipe.get("method", "byol") in {"byol", "simclr", "moco", "multiview"}
    assert recipe["encoder"] in encoders.ARCHITECTURES
    assert 0 < recipe["tau_base"] < 1 and recipe["warmup_epochs"] < recipe["epochs"]
    optimizers.get(recipe["optimizer"], 0.1, recipe["weight_decay"])


def test_imagenet_preset_is_the_papers_recipe():
    assert recipes.RECIPES["imagenet2012"] == dict(
        encoder="resnet50", image_size=224, epochs=1000, batch_size=4096, base_lr=0.2,
        weight_decay=1.5e-6, tau_base=0.996, warmup_epochs=10, optimizer="lars", hidden_dim=4096,
        projection_dim=256)


def test_for_dataset_returns_a_copy_and_falls_back_to_imagenet():
    recipe = recipes.for_dataset("cifar10")
    recipe["epochs"] = 1
    assert recipes.RECIPES["cifar10"]["epochs"] == 800
    assert recipes.for_dataset("/some/folder/of/images") == recipes.RECIPES["imagenet2012"]


def test_cifar10_cpu_changes_only_what_it_says():
    """The CPU recipe: the paper's views without the Gaussian blur, stored in the JSON form a
    resumed run compares its config with (tuples would differ from config.json's lists)."""
    recipe = recipes.RECIPES["cifar10_cpu"]
    options = recipe["method_options"]
    assert json.loads(json.dumps(options)) == options
    for name, paper in (("view1", augment.VIEW1), ("view2", augment.VIEW2)):
        view = augment.check_config(options[name])
        assert view == augment.check_config(dict(paper, blur_prob=0.0))
    assert (recipe["optimizer"], recipe["warmup_epochs"]) == ("adamw", 0)


def test_cifar10_cpu_short_differs_from_cifar10_cpu_only_in_crop_area_and_epochs():
    long, short = recipes.RECIPES["cifar10_cpu"], recipes.RECIPES["cifar10_cpu_short"]
    assert {k: v for k, v in short.items() if k not in ("epochs", "method_options")} == \
        {k: v for k, v in long.items() if k not in ("epochs", "method_options")}
    for name in ("view1", "view2"):
        assert short["method_options"][name] == dict(long["method_options"][name],
                                                     crop_area=[0.2, 1.0])
    assert json.loads(json.dumps(short["method_options"])) == short["method_options"]


def test_a_view_given_in_part_changes_only_its_keys():
    """--method_options may name a few keys of a view; the rest stay the preset's (or the
    paper's, for a preset without views), in the canonical form config.json holds."""
    preset = recipes.RECIPES["cifar10_cpu"]["method_options"]
    options = recipes.merge_method_options(
        preset, json.loads('{"view1": {"crop_area": [0.2, 1.0]}, "tau_schedule": "constant"}'))
    assert options == dict(preset, view1=dict(preset["view1"], crop_area=[0.2, 1.0]),
                           tau_schedule="constant")
    assert options["view1"]["blur_prob"] == 0.0  # the preset's, not the paper's 1.0
    options = recipes.merge_method_options({}, {"view2": {"solarize_prob": 0.0}})
    assert options == {"view2": augment.check_config(dict(augment.VIEW2, solarize_prob=0.0))}
    with pytest.raises(ValueError, match="crop_aera"):
        recipes.merge_method_options({}, {"view1": {"crop_aera": [0.2, 1.0]}})
    with pytest.raises(ValueError, match="view2 must be a JSON object"):
        recipes.merge_method_options({}, {"view2": [0.2, 1.0]})
