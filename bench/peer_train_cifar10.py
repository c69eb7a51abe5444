"""The peer end to end: byol-pytorch pretrains byol_tf's ResNet on the full CIFAR-10 train
set, then writes the encoder's features of the train and test images for one shared kNN.

Runs in the bench-only environment (`bench/requirements-peer.txt`); started by
`bench/compare_peer_training.py` beside `train.py`.

    .venv-peer/bin/python bench/peer_train_cifar10.py --npz=~/.cache/byol_data/cifar10.npz \
        --steps=780 --features=/tmp/peer_features.npz

As byol-pytorch's README trains: `BYOL(net, image_size=32, hidden_layer=-1)` with its default
augmentation (batch-wide draws) inside the step, Adam 3e-4, a fixed target EMA τ
(`--tau`, its default 0.99); data from a shuffled in-memory DataLoader (batch 128, last
partial batch dropped). Features: the online network in eval mode on the un-augmented
images, normalised with the ImageNet mean/std as its augmentation does. Prints one JSON
line with the training-loop and whole-run seconds.
"""

import json
import os
import resource
import time

from absl import app, flags

flags.DEFINE_string("npz", "~/.cache/byol_data/cifar10.npz",
                    "CIFAR-10 as scripts/prepare_cifar10.py writes it.")
flags.DEFINE_enum("encoder", "tiny_resnet_cifar", ["resnet10_cifar", "resnet18_cifar", "resnet34_cifar",
                                                   "tiny_resnet_cifar"],
                  "byol_tf's ResNet, rebuilt in PyTorch.")
flags.DEFINE_integer("steps", 780, "Training steps.")
flags.DEFINE_integer("batch_size", 128, "Batch.")
flags.DEFINE_float("lr", 3e-4, "Adam learning rate.")
flags.DEFINE_float("tau", 0.99, "EMA rate of the target.")
flags.DEFINE_integer("hidden_dim", 1024, "Projector / predictor hidden size.")
flags.DEFINE_integer("projection_dim", 128, "Projector / predictor output size.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_enum("layout", "channels_last", ["channels_last", "contiguous"],
                  "Memory format of the network and the batches (channels-last: oneDNN's fast "
                  "path on the CPU, the peer at its best; contiguous: PyTorch's default NCHW).")
flags.DEFINE_string("features", None, "Output .npz of features and labels.", required=True)
FLAGS = flags.FLAGS


START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from peer_byol_pytorch import ENCODERS, CifarResNet  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main(argv):
    del argv
    args = FLAGS

    from byol_pytorch import BYOL

    torch.manual_seed(args.seed)
    data = np.load(os.path.expanduser(args.npz))
    to_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255)  # noqa: E731
    x_train, x_test = to_tensor(data["x_train"]), to_tensor(data["x_test"])
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train), batch_size=args.batch_size, shuffle=True,
        drop_last=True, generator=torch.Generator().manual_seed(args.seed))

    net = CifarResNet(**ENCODERS[args.encoder])
    learner = BYOL(net, image_size=32, hidden_layer=-1, projection_size=args.projection_dim,
                   projection_hidden_size=args.hidden_dim, moving_average_decay=args.tau)
    layout = torch.channels_last if args.layout == "channels_last" else torch.contiguous_format
    learner = learner.to(memory_format=layout)
    optimizer = torch.optim.Adam(learner.parameters(), lr=args.lr)
    losses, step, loop_start = [], 0, time.perf_counter()
    while step < args.steps:
        for (images,) in loader:
            loss = learner(images.contiguous(memory_format=layout))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            learner.update_moving_average()
            losses.append(float(loss.detach()))
            step += 1
            if step == args.steps:
                break
    loop_seconds = time.perf_counter() - loop_start

    net.eval()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        features = {name: torch.cat([net((x[i:i + 500] - mean) / std)
                                     for i in range(0, len(x), 500)]).numpy()
                    for name, x in (("train", x_train), ("test", x_test))}
    np.savez(args.features, train=features["train"], test=features["test"],
             y_train=data["y_train"], y_test=data["y_test"])
    print(json.dumps(dict(
        library="byol-pytorch", encoder=args.encoder, steps=args.steps,
        batch_size=args.batch_size, seed=args.seed, lr=args.lr, tau=args.tau, layout=args.layout,
        loop_seconds=round(loop_seconds, 1), run_seconds=round(time.perf_counter() - START, 1),
        first_loss=losses[0], last_loss=float(np.mean(losses[-20:])),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        threads=torch.get_num_threads(), torch=torch.__version__)))


if __name__ == "__main__":
    app.run(main)
