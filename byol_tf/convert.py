"""Import DeepMind's official BYOL checkpoints into Keras, without JAX, Haiku or optax.

The authors released their pretrained networks as pickles written by their
`byol/utils/checkpointing.py` (dill, protocol 2):

    {"experiment_state": _ByolExperimentState(online_params, target_params, online_state,
                                              target_state, opt_state),
     "step": int, "rng": array}

with Haiku parameter trees `{module path: {"w" | "b" | "scale" | "offset": array}}` and state
trees `{".../~/mean_ema" | ".../~/var_ema": {"average", "hidden", "counter"}}`. Linear-eval
checkpoints hold `_EvalExperimentState(backbone_params, classif_params, backbone_state, …)`.

A pickle is a program: `read_checkpoint` runs a restricted unpickler that builds numpy arrays,
dicts, lists and tuples, maps the checkpoint's own classes (`byol.*`, `haiku.*`, `optax.*`,
`jax.*`) to inert stand-ins, and refuses every other global (`os.system`, `builtins.eval`, …).

`from_deepmind(path)` returns the online encoder (and the projector, predictor and online
ImageNet classifier the checkpoint carries) as Keras models with byol_tf's own layers. Every
array of the online parameters and statistics must find its Keras weight and every Keras
weight must be set, or a `ConversionError` names what is left.

Name map (Haiku → byol_tf), `P` the encoder module (`res_net50`, `res_net200`, …):
  P/~/initial_conv {w}                                  → stem_conv {kernel}
  P/~/initial_batchnorm {scale, offset} + state          → stem_bn {gamma, beta, moving_*}
  P/~/block_group_g/~/block_b/~/conv_i {w}               → group{g}_block{b}_conv{i}
  P/~/block_group_g/~/block_b/~/batchnorm_i              → group{g}_block{b}_bn{i}
  P/~/block_group_g/~/block_b/~/shortcut_conv | _batchnorm → …_shortcut_conv | _shortcut_bn
  projector/linear {w, b}, projector/batch_norm, projector/linear_1 {w} → MLP hidden, bn, out
  predictor/…                                            → the same
(Haiku joins modules built in a constructor with "/~/" and those built in `__call__`,
as the official MLP's layers, with "/"; moving averages: `…/batch_norm/~/mean_ema`.)
  classifier {w, b} (linear-eval checkpoints: linear)    → Dense(1000)
Kernels are HWIO (convs) and [in, out] (linear) in both; BN parameters of shape
(1, 1, 1, C) or (1, C) become (C,). Inference uses the `average` of each moving average.

CLI: byol-convert --checkpoint=pretrain_res50x1.pkl --out=exports/byol_res50x1 (byol_tf.cli.convert)
"""

import collections
import dataclasses
import io
import pathlib
import pickle
import re

import numpy as np

IMAGE_SIZE = 224  # the official ImageNet resolution
CENTRAL_FRACTION = 224 / 256  # the official evaluation's centre crop


class ConversionError(ValueError):
    """The checkpoint does not match the architecture: names the parameter at fault."""


# ----------------------------------------------------------------------------- reading
ExperimentState = collections.namedtuple(
    "ExperimentState", "online_params target_params online_state target_state opt_state")
EvalExperimentState = collections.namedtuple(
    "EvalExperimentState",
    "backbone_params classif_params backbone_state backbone_opt_state classif_opt_state")

_NAMED_STATES = {"_ByolExperimentState": ExperimentState,
                 "_EvalExperimentState": EvalExperimentState}
# Modules whose classes the checkpoint may name; they become inert records.
_RECORD_MODULES = ("byol", "haiku", "optax", "jax", "jaxlib")


def _numpy_global(name):
    from numpy._core import multiarray
    return {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}[name]


def _empty_array(subtype, shape, dtype):
    """numpy's `_reconstruct` as pickled arrays call it: an empty array that the pickle's
    state then fills with the data it carries. An array of any other shape would be memory
    the file asks for without carrying it: refused."""
    if not isinstance(shape, tuple) or any(not isinstance(n, int) for n in shape) or (
            0 not in shape):
        raise ConversionError(f"the checkpoint asks numpy for an array of shape {shape!r} "
                              "without its data (not how numpy pickles arrays)")
    return _numpy_global("_reconstruct")(np.ndarray, shape, dtype)


def _no_array_constructor(*args, **kwargs):
    raise ConversionError("the checkpoint calls numpy.ndarray(...) directly, allocating memory "
                          "it does not carry (not how numpy pickles arrays)")


_SAFE_GLOBALS = {
    ("numpy", "ndarray"): lambda: _no_array_constructor,  # (only `_reconstruct`'s subtype)
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _empty_array,
    ("numpy.core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _numpy_global("scalar"),
    ("_codecs", "encode"): lambda: __import__("codecs").encode,  # protocol-2 bytes
    ("collections", "OrderedDict"): lambda: collections.OrderedDict,
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it would run code)."""


class _Record:
    """Inert stand-in for a class the checkpoint names (a Haiku mapping, an optax state):
    keeps its constructor arguments and state, runs nothing."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        record = object.__new__(cls)
        record.args, record.kwargs, record.state = args, kwargs, None
        return record

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<{self.qualname} record>"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]()
        if module.split(".")[0] in _RECORD_MODULES and re.fullmatch(r"[A-Za-z_]\w*", name):
            if name in _NAMED_STATES:
                return _NAMED_STATES[name]
            return type(name, (_Record,), {"qualname": f"{module}.{name}"})
        raise RefusedGlobal(
            f"refused global {module}.{name}: a BYOL checkpoint holds only arrays and "
            "containers, and loading this would run code; the file is not an official "
            "checkpoint or has been tampered with")


MAX_NESTING = 64  # containers within containers (a checkpoint nests 4 deep)


def _plain(obj, done=None, depth=0):
    """Records wrapping one mapping (Haiku's FlatMapping) → that mapping; containers → dicts,
    lists and tuples of numpy arrays. Each object converted once, however often it is referred
    to (`done`: id → result); a container holding itself, or nesting deeper than
    MAX_NESTING, is refused."""
    done = {} if done is None else done
    if not isinstance(obj, (_Record, dict, list, tuple)):
        return obj
    if id(obj) in done:
        if done[id(obj)] is _IN_PROGRESS:
            raise ConversionError("the checkpoint holds a container inside itself")
        return done[id(obj)]
    if depth > MAX_NESTING:
        raise ConversionError(f"the checkpoint nests containers more than {MAX_NESTING} deep")
    done[id(obj)] = _IN_PROGRESS
    plain = lambda v: _plain(v, done, depth + 1)  # noqa: E731
    if isinstance(obj, _Record):
        parts = [a for a in (*obj.args, obj.state) if isinstance(a, (dict, _Record))]
        out = plain(parts[0]) if len(parts) == 1 and not obj.kwargs else obj
    elif isinstance(obj, dict):
        out = {k: plain(v) for k, v in obj.items()}
    elif hasattr(obj, "_fields"):
        out = type(obj)(*(plain(v) for v in obj))
    else:
        out = type(obj)(plain(v) for v in obj)
    done[id(obj)] = out
    return out


_IN_PROGRESS = object()


def read_checkpoint(path_or_bytes):
    """Reads an official checkpoint → dict(params, state, classifier_module, step, kind).

    `params`/`state` are the online (pretraining) or backbone (linear-eval) trees, plain
    dicts of numpy arrays. Raises `RefusedGlobal` for a pickle that names a
    global outside the allow-list, `ConversionError` for one with another layout."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        stream = io.BytesIO(path_or_bytes)
    else:
        path = pathlib.Path(path_or_bytes)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        stream = open(path, "rb")
    with stream:
        try:
            data = _RestrictedUnpickler(stream).load()
        except RefusedGlobal:
            raise
        except ConversionError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
                KeyError, AttributeError, MemoryError, RecursionError) as e:
            raise ConversionError(f"the checkpoint is not a readable pickle (truncated, "
                                  f"corrupt or hostile): {type(e).__name__}: {e}") from None
    try:
        data = _plain(data)
    except RecursionError:
        raise ConversionError("the checkpoint nests containers too deeply") from None
    if not isinstance(data, dict) or "experiment_state" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConversionError(f"expected a dict with 'experiment_state' (DeepMind's checkpointer "
                              f"layout); found {found}")
    state = data["experiment_state"]
    if isinstance(state, ExperimentState):
        out = dict(params=state.online_params, state=state.online_state, kind="pretrain",
                   classifier_module="classifier")
    elif isinstance(state, EvalExperimentState):
        params = {**state.backbone_params, **state.classif_params}
        out = dict(params=params, state=state.backbone_state, kind="linear-eval",
                   classifier_module="linear")
    else:
        raise ConversionError(f"experiment_state is a {type(state).__name__}, not BYOL's "
                              "_ByolExperimentState or _EvalExperimentState")
    for what in ("params", "state"):
        tree = out[what]
        if not isinstance(tree, dict) or not all(isinstance(v, dict) for v in tree.values()):
            raise ConversionError(f"online {what} are not a Haiku tree {{module: {{name: array}}}}")
    out["step"] = int(data["step"]) if data.get("step") is not None else None
    return out


# ----------------------------------------------------------------------------- mapping
@dataclasses.dataclass
class Converted:
    """The networks of an official checkpoint as Keras models (online weights).

    encoder: normalised images [B, H, W, 3] → representation [B, 2048·width].
    classifier: representation → ImageNet logits [B, 1000] (None if absent).
    `converter()` is the official evaluation input (any image size: centre crop 224/256,
    bicubic resize to 224, ImageNet mean/std).
    projector, predictor: byol_tf MLPs (None if absent, e.g. linear-eval checkpoints).
    """
    encoder: object
    classifier: object = None
    projector: object = None
    predictor: object = None
    step: int = None
    kind: str = "pretrain"
    architecture: dict = dataclasses.field(default_factory=dict)

    def converter(self):
        """The official evaluation input as an `ImageConverter` (any image size: centre
        crop 224/256, bicubic resize, ImageNet mean/std); `ImageEncoder(encoder, converter())`
        takes uint8 images of any size."""
        from byol_tf.preprocessing import ImageConverter

        size = self.architecture.get("image_size", IMAGE_SIZE)
        return ImageConverter(image_size=size, crop_fraction=CENTRAL_FRACTION, antialias=False)


def _encoder_prefix(params):
    prefixes = {k.split("/~/")[0] for k in params if k.endswith("/~/initial_conv")}
    if len(prefixes) != 1:
        raise ConversionError(f"expected one encoder module with an 'initial_conv'; found "
                              f"{sorted(prefixes) or 'none'}")
    prefix = prefixes.pop()
    match = re.fullmatch(r"res_net(\d+)", prefix)
    if not match:
        raise ConversionError(f"unsupported encoder module {prefix!r} (expected res_net50, "
                              "res_net101, res_net152 or res_net200)")
    return prefix, int(match.group(1))


def _haiku_name(layer_name, prefix):
    """byol_tf ResNet layer name → Haiku module path (None if it has no counterpart)."""
    if layer_name in ("stem_conv", "stem_bn"):
        return f"{prefix}/~/" + {"stem_conv": "initial_conv", "stem_bn": "initial_batchnorm"}[layer_name]
    m = re.fullmatch(r"group(\d+)_block(\d+)_(?:conv(\d)|bn(\d)|(shortcut_conv)|(shortcut_bn))",
                     layer_name)
    if not m:
        return None
    g, b, conv, bn, shortcut_conv, _ = m.groups()
    part = (f"conv_{conv}" if conv is not None else f"batchnorm_{bn}" if bn is not None
            else "shortcut_conv" if shortcut_conv else "shortcut_batchnorm")
    return f"{prefix}/~/block_group_{g}/~/block_{b}/~/{part}"


_HEAD_NAMES = {"hidden": "linear", "bn": "batch_norm", "out": "linear_1"}


class _Assigner:
    """Sets Keras weights from the trees and keeps count of what was used."""

    def __init__(self, params, state):
        self.params, self.state = params, state
        self.used = set()

    def _take(self, tree, module, name, what):
        if module not in tree or name not in tree[module]:
            raise ConversionError(f"missing {what} {module}/{name}: the Keras model needs it")
        self.used.add((id(tree), module, name))
        return np.asarray(tree[module][name])

    def set(self, variable, module, name, from_state=False):
        tree = self.state if from_state else self.params
        array = self._take(tree, module, name, "statistic" if from_state else "parameter")
        if from_state:  # the moving average's internals are accounted for, not used
            for aux in ("hidden", "counter"):
                if aux in tree[module]:
                    self.used.add((id(tree), module, aux))
        target = tuple(variable.shape)
        if len(target) == 1 and array.shape == (1,) * (array.ndim - 1) + target:
            array = array.reshape(target)  # Haiku keeps BN vectors as (1, 1, 1, C) / (1, C)
        if array.shape != target:
            raise ConversionError(f"shape mismatch for {module}/{name}: checkpoint "
                                  f"{array.shape}, Keras weight {variable.path} {target}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ConversionError(f"{module}/{name} has dtype {array.dtype}, expected float")
        variable.assign(array.astype(variable.dtype))

    def set_dense(self, layer, module):
        self.set(layer.kernel, module, "w")
        if layer.use_bias:
            self.set(layer.bias, module, "b")

    def set_bn(self, layer, module):
        self.set(layer.gamma, module, "scale")
        self.set(layer.beta, module, "offset")
        self.set(layer.moving_mean, f"{module}/~/mean_ema", "average", from_state=True)
        self.set(layer.moving_variance, f"{module}/~/var_ema", "average", from_state=True)

    def leftovers(self, tree, modules=None):
        return [f"{m}/{n}" for m in sorted(tree) if modules is None or m in modules
                for n in sorted(tree[m]) if (id(tree), m, n) not in self.used]


def from_deepmind(path_or_bytes, image_size=IMAGE_SIZE):
    """Official checkpoint → `Converted` (Keras encoder, classifier, projector, predictor).

    Raises ConversionError naming the parameter when the checkpoint and the architecture
    disagree (missing, left over, or of another shape)."""
    import keras

    from byol_tf import encoders, model_files
    from byol_tf.layers import MLP

    ckpt = read_checkpoint(path_or_bytes)
    params, state = ckpt["params"], ckpt["state"]
    prefix, depth = _encoder_prefix(params)
    if "w" not in params[f"{prefix}/~/initial_conv"]:
        raise ConversionError(f"missing parameter {prefix}/~/initial_conv/w")
    stem_channels = np.shape(params[f"{prefix}/~/initial_conv"]["w"])[-1]
    width, ragged = divmod(stem_channels, 64)
    if ragged or width < 1:
        raise ConversionError(f"{prefix}/~/initial_conv/w has {stem_channels} output channels; "
                              "expected a multiple of 64 (width multiplier × 64)")
    arguments = dict(depth=depth, stem="imagenet", width_multiplier=width,
                     input_shape=(image_size, image_size, 3),
                     name=f"byol_deepmind_res{depth}x{width}")
    try:  # (the declared network counted before it is built: the checkpoint must carry it)
        declared = model_files.count_parameters(lambda: encoders.ResNet(**arguments))
        carried = sum(np.size(a) for tree in (params, state) for module in tree.values()
                      for a in module.values())
        if declared > 2 * carried:  # (a few missing or misshapen arrays are named below)
            raise ConversionError(
                f"{prefix}/~/initial_conv/w declares a {prefix} of width ×{width} "
                f"({declared:,} parameters) but the checkpoint carries {carried:,} numbers")
        encoder = encoders.ResNet(**arguments)
    except ValueError as e:
        raise ConversionError(str(e)) from e
    put = _Assigner(params, state)
    for layer in encoder.layers:
        if not layer.weights:
            continue
        module = _haiku_name(layer.name, prefix)
        if module is None:
            raise ConversionError(f"no Haiku name for Keras layer {layer.name}")
        if isinstance(layer, keras.layers.BatchNormalization):
            put.set_bn(layer, module)
        else:
            put.set(layer.kernel, module, "w")

    def head(name):
        modules = [m for m in params if m == name or m.startswith(name + "/")]
        if not modules:
            return None
        try:
            hidden = np.shape(params[f"{name}/linear"]["w"])
            out = np.shape(params[f"{name}/linear_1"]["w"])
        except KeyError as e:
            raise ConversionError(f"missing parameter {e.args[0]} of the {name} MLP") from e
        mlp = MLP(hidden[1], out[1], input_dim=hidden[0], name=f"{name}")
        for layer in mlp.layers:
            module = f"{name}/{_HEAD_NAMES[layer.name]}" if layer.name in _HEAD_NAMES else None
            if isinstance(layer, keras.layers.BatchNormalization):
                put.set_bn(layer, module)
            elif layer.weights:
                put.set_dense(layer, module)
        return mlp

    projector, predictor = head("projector"), head("predictor")
    classifier = None
    module = ckpt["classifier_module"]
    if module in params:
        w = np.shape(params[module].get("w", ()))
        if len(w) != 2:
            raise ConversionError(f"missing parameter {module}/w (a [representation, classes] matrix)")
        classifier = keras.Sequential([keras.Input((w[0],)), keras.layers.Dense(w[1], name="logits")],
                                      name="classifier")
        put.set_dense(classifier.layers[-1], module)

    left = put.leftovers(params) + put.leftovers(state)
    if left:
        shown = ", ".join(left[:8]) + (f", … ({len(left)} in all)" if len(left) > 8 else "")
        raise ConversionError(f"checkpoint entries not consumed by the Keras model: {shown}")
    return Converted(encoder=encoder, classifier=classifier, projector=projector,
                     predictor=predictor, step=ckpt["step"], kind=ckpt["kind"],
                     architecture=dict(depth=depth, width_multiplier=width, module=prefix,
                                       image_size=image_size))
