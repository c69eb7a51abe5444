"""A training step's peak memory, estimated before anything runs, and the machine's.

The estimate is an upper bound fitted to peak resident memory measured on a CPU
(bench/results/memory_cpu.md): the framework's fixed share, plus the encoder's layer outputs
for the batch in float32, plus copies of the weights (online, target, gradients, optimizer
slots):

    peak ≈ 1.25 GiB + 1.25 · batch · activations(image) · 4 B + 16 · parameters · 4 B
"""

import numpy as np

from byol_tf.training.config import ConfigError

BASE_BYTES = int(1.25 * 2**30)
ACTIVATION_FACTOR = 1.25
PARAMETER_FACTOR = 16
SMALLEST_BATCH = 16


def model_size(config):
    """(float32 layer outputs of the encoder for one image, parameters of encoder and heads)
    of a run config (`encoder`, `image_size`, `hidden_dim`, `projection_dim`)."""
    from byol_tf import encoders

    side = config["image_size"]
    try:
        model = encoders.get(config["encoder"], input_shape=(side, side, 3))
    except ValueError as e:
        raise ConfigError(f"--encoder: {e}") from None
    outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
    hidden, projection = config["hidden_dim"], config["projection_dim"]
    heads = int(model.output.shape[-1]) * hidden + hidden * projection + 2 * projection * hidden
    return outputs, model.count_params() + heads


def step_bytes(batch_size, activations, parameters):
    """The estimated peak bytes of a training step."""
    return int(BASE_BYTES + 4 * (ACTIVATION_FACTOR * batch_size * activations
                                 + PARAMETER_FACTOR * parameters))


def available_bytes():
    """Memory this process may still use: MemAvailable, or the cgroup's limit less its use
    when that is smaller; None when neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f, open(usage) as g:
                text = f.read().strip()
                if text != "max" and int(text) < 2**60:
                    found.append(int(text) - int(g.read().strip()))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def gib(n):
    return f"{n / 2**30:.1f} GiB"


def fit_batch(config, available, batch_given):
    """The batch size to train with on a machine with `available` bytes free: the config's
    when its estimate fits in 90% of them; otherwise (a batch from the recipe) the largest
    power-of-two fraction of it that fits, with a message saying so. Raises ConfigError (the
    estimate, what is free, the flags to change) when a `--batch_size` given by the user, or
    the smallest batch, does not fit. Returns (batch_size, message or None)."""
    batch = config["batch_size"]
    activations, parameters = model_size(config)
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
    if batch_given or not fitting:
        raise ConfigError(
            f"--batch_size={batch} with --encoder={config['encoder']} at --image_size="
            f"{config['image_size']} needs about {gib(need)} for a training step (estimate); "
            f"this machine has {gib(available)} available: use {advice}")
    return fits, (f"Batch {batch} of the recipe needs about {gib(need)} for a training step "
                  f"(estimate); this machine has {gib(available)} available: training with "
                  f"batch {fits} (the learning rate scales with it). --batch_size sets it.")
