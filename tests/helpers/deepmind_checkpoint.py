"""Writes pickles with the layout of DeepMind's released BYOL checkpoints (for tests).

`byol/utils/checkpointing.py` in google-deepmind/deepmind-research dumps, with dill and
protocol 2, `dict(experiment_state=_ByolExperimentState(online_params, target_params,
online_state, target_state, opt_state), step=…, rng=…)`. The classes it names live in
modules that are not installed here (`byol.byol_experiment`, `byol.utils.optimizers`), so
stand-ins with those module paths are registered only while pickling.
"""

import contextlib
import pickle
import sys
import types
from typing import NamedTuple

import numpy as np


class _ByolExperimentState(NamedTuple):
    online_params: object
    target_params: object
    online_state: object
    target_state: object
    opt_state: object


class _EvalExperimentState(NamedTuple):
    backbone_params: object
    classif_params: object
    backbone_state: object
    backbone_opt_state: object
    classif_opt_state: object


class AddWeightDecayState(NamedTuple):
    pass


class ScaleByLarsState(NamedTuple):
    mu: object


class ScaleState(NamedTuple):
    pass


_MODULES = {
    "byol.byol_experiment": [_ByolExperimentState],
    "byol.eval_experiment": [_EvalExperimentState],
    "byol.utils.optimizers": [AddWeightDecayState, ScaleByLarsState],
    "optax._src.transform": [ScaleState],
}


@contextlib.contextmanager
def _official_modules():
    added = []
    for name, classes in _MODULES.items():
        if name in sys.modules:
            raise RuntimeError(f"{name} is really imported; the stand-ins would shadow it")
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the packages on the way
            prefix = ".".join(parts[:i])
            if prefix not in sys.modules:
                sys.modules[prefix] = types.ModuleType(prefix)
                added.append(prefix)
        for cls in classes:
            cls.__module__ = name
            setattr(sys.modules[name], cls.__name__, cls)
    try:
        yield
    finally:
        for name in added:
            del sys.modules[name]


def numpy_tree(tree):
    return {m: {n: np.asarray(v) for n, v in leaves.items()} for m, leaves in tree.items()}


def pretrain_pickle(params, state, step=1000, wrap=None):
    """Bytes of a pretraining checkpoint whose online and target networks are `params` /
    `state` (Haiku trees). `wrap`: e.g. haiku's FlatMapping, applied to each tree."""
    params, state = numpy_tree(params), numpy_tree(state)
    wrap = wrap or (lambda t: t)
    mu = {m: {n: np.zeros_like(v) for n, v in leaves.items()} for m, leaves in params.items()}
    experiment_state = _ByolExperimentState(
        wrap(params), wrap(params), wrap(state), wrap(state),
        (AddWeightDecayState(), ScaleByLarsState(mu=wrap(mu)), ScaleState()))
    with _official_modules():
        return pickle.dumps(dict(experiment_state=experiment_state, step=np.int64(step),
                                 rng=np.array([0, 42], np.uint32)), protocol=2)


def eval_pickle(backbone_params, classifier_params, state, step=100):
    """Bytes of a linear-eval checkpoint (`_EvalExperimentState`)."""
    experiment_state = _EvalExperimentState(numpy_tree(backbone_params),
                                            numpy_tree(classifier_params), numpy_tree(state),
                                            None, ())
    with _official_modules():
        return pickle.dumps(dict(experiment_state=experiment_state, step=step, rng=None),
                            protocol=2)


def resnet50_tree(seed=0, width=1, classes=10, heads=True):
    """A ResNet-50 parameter and state tree named as the official code names it, written
    out from the architecture (not from byol_tf's converter)."""
    rng = np.random.default_rng(seed)
    params, state = {}, {}

    def conv(name, k, cin, cout):
        params[name] = {"w": rng.normal(0, (k * k * cin) ** -0.5, (k, k, cin, cout)).astype(np.float32)}

    def bn(name, c, rank=4):
        shape = (1,) * (rank - 1) + (c,)
        params[name] = {"scale": rng.uniform(0.5, 1.5, shape).astype(np.float32),
                        "offset": rng.normal(0, 0.1, shape).astype(np.float32)}
        for ema, value in (("mean_ema", rng.normal(0, 0.1, shape)),
                           ("var_ema", rng.uniform(0.5, 2.0, shape))):
            state[f"{name}/~/{ema}"] = {"average": value.astype(np.float32),
                                        "hidden": value.astype(np.float32),
                                        "counter": np.array(7, np.int32)}

    p = "res_net50"
    conv(f"{p}/~/initial_conv", 7, 3, 64 * width)
    bn(f"{p}/~/initial_batchnorm", 64 * width)
    cin = 64 * width
    for g, (blocks, c) in enumerate(zip((3, 4, 6, 3), (256, 512, 1024, 2048))):
        c *= width
        for b in range(blocks):
            block = f"{p}/~/block_group_{g}/~/block_{b}/~/"
            if b == 0:
                conv(block + "shortcut_conv", 1, cin, c)
                bn(block + "shortcut_batchnorm", c)
            for i, (k, ci, co) in enumerate(((1, cin, c // 4), (3, c // 4, c // 4), (1, c // 4, c))):
                conv(block + f"conv_{i}", k, ci, co)
                bn(block + f"batchnorm_{i}", co)
            cin = c
    if heads:
        for head, d_in in (("projector", cin), ("predictor", 16)):
            params[f"{head}/linear"] = {"w": rng.normal(0, 0.02, (d_in, 32)).astype(np.float32),
                                          "b": np.zeros(32, np.float32)}
            bn(f"{head}/batch_norm", 32, rank=2)
            params[f"{head}/linear_1"] = {"w": rng.normal(0, 0.1, (32, 16)).astype(np.float32)}
    params["classifier"] = {"w": rng.normal(0, 0.01, (cin, classes)).astype(np.float32),
                            "b": np.zeros(classes, np.float32)}
    return params, state
