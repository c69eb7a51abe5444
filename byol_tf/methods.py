"""Self-supervised methods by name, and their models built from a run config (train.py,
scripts/pretrain_jax.py, bench/ablations.py)."""

from byol_tf import augment
from byol_tf.byol import BYOL
from byol_tf.moco import MoCo
from byol_tf.multiview import MultiView
from byol_tf.simclr import SimCLR

METHODS = {"byol": BYOL, "simclr": SimCLR, "moco": MoCo, "multiview": MultiView}


def build(config, encoder, num_classes, total_steps):
    """The method `config["method"]` (default byol) around `encoder`: projection and hidden
    sizes (and BYOL's tau_base) from the config, then `config["method_options"]`."""
    name = config.get("method", "byol")
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(METHODS)}")
    kwargs = dict(projection_dim=config["projection_dim"], hidden_dim=config["hidden_dim"],
                  total_steps=total_steps, num_classes=num_classes,
                  image_size=config["image_size"], seed=config["seed"])
    if name == "byol":
        kwargs["tau_base"] = config["tau_base"]
    kwargs.update(config.get("method_options") or {})
    try:
        return METHODS[name](encoder, **kwargs)
    except TypeError as e:
        raise ValueError(f"method_options for {name}: {e}") from None


def view_configs(config):
    """The (view1, view2) augmentation configs a run config gives its model (and its
    tf.data pipeline, for sources that crop per image): `method_options`' or the paper's."""
    options = config.get("method_options") or {}
    return augment.view_configs(options.get("view1"), options.get("view2"))
