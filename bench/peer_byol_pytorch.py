"""The peer's BYOL update: byol-pytorch (lucidrains) on the same ResNet, timed like ours, on
the CPU or a CUDA GPU.

Runs in the bench-only environment (`bench/requirements-peer.txt`), never imported by
byol_tf. `bench/compare_peer.py` starts it beside `bench/bench_train_step.py`.

    .venv-peer/bin/python bench/peer_byol_pytorch.py --encoder=resnet18_cifar --steps=5
    python bench/peer_byol_pytorch.py --device=cuda --encoder=resnet50 --image_size=224 \
        --batch_size=256 --precision=mixed_bfloat16 --steps=20

The network is byol_tf's: its CIFAR ResNets rebuilt in PyTorch layer for layer (3×3/1
conv + BN + ReLU stem, no max-pool; basic blocks; projection shortcut when the shape
changes; global average pool), its ImageNet-stem ResNets are torchvision's (the same
layers; the classifier removed), so both libraries train the same parameter count.
byol-pytorch's own `BYOL` wraps it as its README shows (`hidden_layer=-1`: the network's
output is the representation), with its default augmentation inside the step
(`--noaugment`: the identity, a compute-only step like ours), projector/predictor 4096 →
256, and Adam (its README's optimizer). One step: forward on both views (the library
concatenates them into one batch), loss, backward, optimizer step, EMA update. The peer
runs at its best: channels-last tensors (`--layout`, on the CPU too: oneDNN's fast path), and
on CUDA cuDNN autotuning, TF32 matmuls, images already on the GPU. Prints one JSON line: images/s over `--repeats` runs of `--steps`
steps, peak RSS (and peak GPU memory), thread count and versions.
"""

import contextlib
import json
import time
from importlib.metadata import version

from absl import app, flags

import torch
from torch import nn

from load import round_fields, timed_rounds
from memory import memory_mb
from op_groups import summary

FLAGS = flags.FLAGS


DEPTHS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
ENCODERS = {  # byol_tf.encoders.ARCHITECTURES, basic-block CIFAR nets
    "tiny_resnet_cifar": dict(depth=10, base_width=16),
    "resnet10_cifar": dict(depth=10, base_width=64),
    "resnet18_cifar": dict(depth=18, base_width=64),
    "resnet34_cifar": dict(depth=34, base_width=64),
}
IMAGENET_STEM = ["resnet18", "resnet34", "resnet50"]  # torchvision's, the same layers


class BasicBlock(nn.Module):
    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1))

    def forward(self, x):
        y = torch.relu(self.bn0(self.conv0(x)))
        return torch.relu(self.bn1(self.conv1(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """byol_tf's ResNet(depth, stem="cifar", base_width): images [B, 3, H, W] → [B, 8·base]."""

    def __init__(self, depth, base_width):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, base_width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(base_width, eps=1e-5, momentum=0.1), nn.ReLU())
        blocks, channels = [], base_width
        for g, count in enumerate(DEPTHS[depth]):
            width = base_width * 2 ** g
            for b in range(count):
                blocks.append(BasicBlock(channels, width, 2 if g > 0 and b == 0 else 1))
                channels = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


def build_net(encoder):
    """byol_tf's `encoder` in PyTorch: images [B, 3, H, W] → [B, D]."""
    if encoder in ENCODERS:
        return CifarResNet(**ENCODERS[encoder])
    import torchvision

    net = getattr(torchvision.models, encoder)()  # byol_tf's ImageNet-stem ResNets
    net.fc = nn.Identity()
    return net


def main(argv):
    del argv
    args = FLAGS
    from byol_pytorch import BYOL

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise SystemExit("--device=cuda: torch sees no CUDA GPU")
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    layout = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    net = build_net(args.encoder)
    extra = {} if args.augment else dict(augment_fn=nn.Identity())
    learner = BYOL(net, image_size=args.image_size, hidden_layer=-1,
                   projection_size=args.projection_dim,
                   projection_hidden_size=args.hidden_dim, **extra).to(device, memory_format=layout)
    optimizer = torch.optim.Adam(learner.parameters(), lr=3e-4)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size,
                        device=device).contiguous(memory_format=layout)

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if args.precision == "mixed_bfloat16" else contextlib.nullcontext())

    def run(n):
        for _ in range(n):
            with autocast:
                loss = learner(images)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            learner.update_moving_average()
        float(loss.detach())  # waits for the device

    run(args.warmup)  # (a round disturbed by other processes is repeated: bench/load.py)
    kept, rounds = timed_rounds(lambda: run(args.steps), args.repeats)
    gpu = {}
    if cuda:
        gpu = dict(device=torch.cuda.get_device_name(device),
                   device_peak_mb=round(torch.cuda.max_memory_allocated(device) / 2**20, 1))
    profile = {}
    if args.profile_steps:
        profile, table = profiled(run, args.profile_steps)
        print(table)
    print(json.dumps(dict(
        library="byol-pytorch", encoder=args.encoder, image_size=args.image_size,
        batch_size=args.batch_size, precision=args.precision, augment=args.augment,
        layout=args.layout,
        encoder_parameters=sum(p.numel() for p in net.parameters()),
        **round_fields(kept, rounds, args.steps * args.batch_size),
        steps_per_run=args.steps, **memory_mb(), **gpu,
        threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(),
        torch=torch.__version__, byol_pytorch=version("byol-pytorch"), torchvision=version("torchvision"),
        mkldnn=torch.backends.mkldnn.is_available(),
        **({"profile": profile} if profile else {}))))


def profiled(run, steps):
    """(summary, table) of `steps` steps traced with torch's profiler: each op type's self
    time (on the thread that ran it; its OpenMP workers' time inside it), grouped as
    `op_groups` groups them."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as trace:
        start = time.perf_counter()
        run(steps)
        wall = time.perf_counter() - start
    times = {e.key: (e.self_cpu_time_total * 1e-6, e.count) for e in trace.key_averages()
             if e.self_cpu_time_total > 0}
    return summary(times, steps, wall, "torch")


def define_flags():
    """The command's flags (defined only when it runs: peer_train_cifar10 imports this module)."""
    flags.DEFINE_enum("encoder", "resnet18_cifar", sorted(ENCODERS) + IMAGENET_STEM,
                      "byol_tf's ResNet, in PyTorch.")
    flags.DEFINE_enum("device", "cpu", ["cpu", "cuda"], "Where the step runs.")
    flags.DEFINE_enum("layout", "channels_last", ["channels_last", "contiguous"],
                      "Memory format of the network and the images: channels-last (NHWC, "
                      "oneDNN's and cuDNN's fast path; the peer at its best) or PyTorch's "
                      "default NCHW.")
    flags.DEFINE_bool("augment", True, "byol-pytorch's augmentation in the step (else: none).")
    flags.DEFINE_integer("batch_size", 128, "Batch.")
    flags.DEFINE_integer("image_size", 32, "Image side, px.")
    flags.DEFINE_integer("steps", 5, "Timed steps per repeat.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
    flags.DEFINE_integer("repeats", 1, "Timed repeats.")
    flags.DEFINE_integer("threads", 0, "torch threads (0: torch's default).")
    flags.DEFINE_integer("hidden_dim", 4096, "Projector / predictor hidden size.")
    flags.DEFINE_integer("projection_dim", 256, "Projector / predictor output size.")
    flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"],
                      "mixed_bfloat16: the forward passes under torch.autocast(bfloat16).")
    flags.DEFINE_integer("profile_steps", 0, "Then trace this many steps with torch's profiler "
                         "and add the op types' times, grouped, to the JSON (`profile`).")


if __name__ == "__main__":
    define_flags()
    app.run(main)
