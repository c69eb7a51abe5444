"""A training step's peak memory, estimated before anything runs, and the machine's.

The estimate is an upper bound fitted to peak resident memory measured on a CPU
(bench/results/memory_cpu.md): the framework's fixed share, plus the encoder's layer outputs
for the batch in float32 — one view's where the step takes one view's gradient at a time
(BYOL), both views' otherwise (SimCLR, MoCo, the multi-view objective, BYOL with β > 0) — plus
copies of the weights (online, target, gradients, optimizer slots):

    peak ≈ 1.25 GiB + 1.25 · batch · views · activations(image) · 4 B + 16 · parameters · 4 B
"""

import numpy as np

BASE_BYTES = int(1.25 * 2**30)
ACTIVATION_FACTOR = 1.25
PARAMETER_FACTOR = 16
SMALLEST_BATCH = 16


def views_held(method="byol", method_options=None):
    """Views whose layer outputs a training step holds at once: 1 where the TensorFlow step
    takes one view's gradient after the other (`BYOL.separable_views`: BYOL without β), else 2."""
    return 1 if method == "byol" and not (method_options or {}).get("beta") else 2


def model_size(config):
    """(float32 layer outputs of the encoder that a training step holds, per image in the batch:
    one view's or both, `views_held`; parameters of encoder and heads) of a run config
    (`encoder`, `image_size`, `hidden_dim`, `projection_dim`; `method` and `method_options`,
    default BYOL's)."""
    from byol_tf import encoders

    side = config["image_size"]
    model = encoders.get(config["encoder"], input_shape=(side, side, 3))  # ValueError: unknown
    outputs = sum(int(np.prod(layer.output.shape[1:])) for layer in model.layers)
    hidden, projection = config["hidden_dim"], config["projection_dim"]
    heads = int(model.output.shape[-1]) * hidden + hidden * projection + 2 * projection * hidden
    views = views_held(config.get("method", "byol"), config.get("method_options"))
    return views * outputs, model.count_params() + heads


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
