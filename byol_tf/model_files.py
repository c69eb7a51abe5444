""".keras files read without trusting what they declare.

A `.keras` file is a zip archive of a JSON config and an HDF5 file of weights. Keras builds the
model its config declares, allocating every weight, before it reads a single weight; and it
reads each weight as large as the HDF5 file declares it. So a file of a few hundred bytes can
ask for billions of parameters. `load_model(path)` checks first, without allocating:

  - the archive: no member larger, once inflated, than the archive allows (a zip bomb);
  - the weights: every HDF5 dataset carries the bytes its shape and dtype declare (Keras
    writes them uncompressed; a declared-but-empty or compressed dataset is refused);
  - the config: the model it declares, built without allocating (`keras.StatelessScope`),
    has no more parameters than the weights file carries bytes;

then loads it with `keras.models.load_model` (safe mode: no code in the file runs).
"""

import io
import json
import math
import pathlib
import zipfile

MAX_CONFIG_BYTES = 64 * 2**20  # a ResNet-200×2's config is ~0.5 MB
SLACK_PARAMETERS = 4096  # (scalars a model may build without storing: seeds, counters)


class ModelFileError(ValueError):
    """A `.keras` file that cannot be what it claims; the message names the file."""


def _read_members(path):
    """(config dict, weights bytes or None) of the archive at `path`, sizes checked."""
    from byol_tf.files import open_zip

    size = path.stat().st_size
    try:
        with open_zip(path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            inflated = sum(info.file_size for info in members.values())
            if inflated > 2 * size + 2**20:
                raise ModelFileError(f"{path}: its members inflate to {inflated:,} bytes from "
                                     f"an archive of {size:,} (a zip bomb?)")
            if "config.json" not in members:
                raise ModelFileError(f"{path} has no config.json: not a .keras file")
            if members["config.json"].file_size > MAX_CONFIG_BYTES:
                raise ModelFileError(f"{path}: config.json of {members['config.json'].file_size:,}"
                                     f" bytes, over the limit of {MAX_CONFIG_BYTES:,}")
            config = archive.read("config.json")
            weights = (archive.read("model.weights.h5") if "model.weights.h5" in members
                       else None)
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFileError(f"{path} is not a readable .keras archive ({error})") from None
    except ValueError as error:  # (open_zip: a member compressed otherwise)
        raise ModelFileError(str(error)) from None
    try:
        return json.loads(config), weights
    except RecursionError:
        raise ModelFileError(f"{path}: config.json is nested too deeply") from None
    except ValueError as error:
        raise ModelFileError(f"{path}: config.json is not JSON ({error})") from None


def carried_bytes(path, weights):
    """Bytes of weight data the HDF5 file `weights` carries; ModelFileError for a dataset that
    declares more than it stores."""
    import h5py

    datasets = []
    try:
        with h5py.File(io.BytesIO(weights), "r") as store:
            store.visititems(lambda name, item: datasets.append(
                (name, item.size * item.dtype.itemsize, item.id.get_storage_size()))
                if isinstance(item, h5py.Dataset) else None)
    except (OSError, ValueError, RecursionError) as error:
        raise ModelFileError(f"{path}: model.weights.h5 is not a readable HDF5 file "
                             f"({error})") from None
    for name, declared, stored in datasets:
        if stored < declared:
            raise ModelFileError(f"{path}: weight {name} declares {declared:,} bytes and "
                                 f"stores {stored:,} (damaged or hostile)")
    return sum(declared for _, declared, _ in datasets)


def count_parameters(build):
    """Parameters of the model `build()` returns, built without allocating a weight (Keras
    defers variables created in a `StatelessScope`)."""
    import keras

    from byol_tf import compat

    with compat.deferred_variables():
        with keras.StatelessScope(initialize_variables=False):
            model = build()
        return sum(math.prod(variable.shape) for variable in model.weights)


def declared_parameters(config):
    """Parameters of the model a `.keras` config declares, counted without allocating (its
    compile config left out: an optimizer's slots follow the weights)."""
    import keras

    config = {k: v for k, v in config.items() if k != "compile_config"} if isinstance(
        config, dict) else config
    return count_parameters(lambda: keras.saving.deserialize_keras_object(config,
                                                                           safe_mode=True))


def check(path):
    """Raises ModelFileError when the `.keras` file at `path` declares more than it carries
    (see the module's docstring); reads the archive, allocates no weight."""
    path = pathlib.Path(path)
    config, weights = _read_members(path)
    carried = carried_bytes(path, weights) if weights is not None else 0
    try:
        declared = declared_parameters(config)
    except (MemoryError, RecursionError) as error:
        raise ModelFileError(f"{path}: its config cannot be built ({type(error).__name__})") \
            from None
    if declared > carried + SLACK_PARAMETERS:
        raise ModelFileError(f"{path} declares a model of {declared:,} parameters but carries "
                             f"{carried:,} bytes of weights (damaged or hostile)")


def load_model(path, **kwargs):
    """`keras.models.load_model(path)` after `check(path)`."""
    import keras

    check(path)
    return keras.models.load_model(path, **kwargs)
