"""byol_tf's BYOL step beside byol-pytorch's, on this host's CPU or GPU, in one command.

    .venv/bin/python bench/compare_peer.py --encoder=resnet18_cifar --rounds=3 \
        --out=bench/results/peer_cpu.jsonl
    python bench/compare_peer.py --device=gpu --backend=jax --encoder=resnet50 \
        --image_size=224 --batch_size=256 --steps=20 --peer_python=python   # on a GPU

Alternates the two libraries (ours, peer, ours, peer, …; each run a fresh process that
warms up, then times `--steps` steps) so that both see the same minutes of this VM,
whose speed drifts. Same network (`bench/peer_byol_pytorch.py` rebuilds byol_tf's ResNet
in PyTorch; the parameter counts are checked equal), batch, image size and precision.
Precisions: float32, and mixed_bfloat16 as well where the CPU has native bfloat16; on a GPU
mixed_bfloat16 (`--precisions`). On a GPU byol_tf runs on the JAX backend (`--backend`), its
step jitted as train.py's JAX trainer does, and peak GPU memory is recorded beside peak RSS.
Each run's JSON line (images/s, peak RSS, threads, versions) and a summary line (medians,
ours / peer, the host's CPU model and ISA flags) go to stdout and, with --out, to a file.

`--baseline=DIR` adds a third contender to every round: the byol_tf of another checkout
(e.g. the last release, `git worktree add DIR TAG`), its own `bench/bench_train_step.py`
in this Python, so a change's effect on speed and memory is measured in the same sitting.

The peer runs in its own environment (`bench/requirements-peer.txt`, e.g. `.venv-peer`):
its dependencies are never byol_tf's.
"""

import json
import pathlib
import statistics
import sys
import time

from absl import app, flags

from byol_tf.records import host
from peer_runs import ROOT, drop_page_cache, last_json, report, run, step_flags

flags.DEFINE_string("encoder", "resnet18_cifar", "Encoder preset (a CIFAR ResNet, or resnet18/"
                    "34/50 with the ImageNet stem).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("image_size", 32, "Image side, px.")
flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where both libraries run.")
flags.DEFINE_enum("backend", "tensorflow", ["tensorflow", "jax"], "byol_tf's Keras backend.")
flags.DEFINE_bool("augment", True, "Both libraries draw their views inside the step (else: "
                  "a compute-only step on given views).")
flags.DEFINE_integer("steps", 5, "Timed steps per run.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first in every run.")
flags.DEFINE_integer("rounds", 3, "Runs of each library, alternated.")
flags.DEFINE_string("peer_python", str(ROOT / ".venv-peer/bin/python"),
                    "Python of the environment with byol-pytorch.")
flags.DEFINE_string("ours_python", sys.executable, "Python of the environment with byol_tf.")
flags.DEFINE_list("ours_flags", [], "Extra flags for bench_train_step.py, e.g. --jit_compile.")
flags.DEFINE_list("precisions", ["auto"], "float32 and/or mixed_bfloat16; auto: float32, and "
                  "mixed_bfloat16 too where the CPU has native bfloat16 (AVX512-BF16 or AMX).")
flags.DEFINE_string("baseline", None, "A checkout of another byol_tf version to time too.")
flags.DEFINE_bool("drop_caches", False, "Empty the page cache before every run (root; "
                  "makes the peak RSS of both libraries comparable, see bench/memory.py).")
flags.DEFINE_string("label", "", "What this comparison varies (kept in the summary).")
flags.DEFINE_string("out", None, "Append the JSON lines to this file.")
FLAGS = flags.FLAGS
BASELINE = "byol_tf@baseline"  # the --baseline contender's name in the results


def main(_):
    precisions = FLAGS.precisions
    if precisions == ["auto"]:
        native = {"avx512_bf16", "amx_bf16"} & set(host()["isa"])
        precisions = (["mixed_bfloat16"] if FLAGS.device == "gpu" else
                      ["float32", "mixed_bfloat16"] if native else ["float32"])
    for precision in precisions:
        compare(precision)


def compare(precision):
    common = [*step_flags(FLAGS, precision), "--repeats=1"]
    ours = [FLAGS.ours_python, "bench/bench_train_step.py", *common, "--aug_steps=0",
            *FLAGS.ours_flags]
    peer = [FLAGS.peer_python, "bench/peer_byol_pytorch.py", *common,
            f"--device={'cuda' if FLAGS.device == 'gpu' else 'cpu'}"]
    # byol_tf on a CPU: TensorFlow's kernels only; on a GPU, the accelerator JAX finds.
    ours_env = dict(KERAS_BACKEND=FLAGS.backend)
    if FLAGS.device == "cpu":
        ours_env["CUDA_VISIBLE_DEVICES"] = ""
    contenders = [("byol_tf", ours, ours_env), ("byol-pytorch", peer, None)]
    if FLAGS.baseline:
        baseline = pathlib.Path(FLAGS.baseline).resolve()
        contenders.append((BASELINE, [FLAGS.ours_python, str(baseline / ours[1]), *ours[2:]],
                           dict(ours_env, PYTHONPATH=str(baseline))))
    lines, rates = [], {name: [] for name, _, _ in contenders}
    for round_ in range(FLAGS.rounds):
        for name, command, env in contenders:
            if FLAGS.drop_caches:
                drop_page_cache()
            result = {"library": name, **last_json(run(command, env)[0]), "round": round_}
            rates[name].append(result["train_images_per_s"])
            lines.append(result)
            print(json.dumps(result), flush=True)
    ours_params = lines[0].get("encoder_parameters")
    peer_params = lines[1].get("encoder_parameters")
    if ours_params != peer_params:
        raise RuntimeError(f"the networks differ: {ours_params} vs {peer_params} parameters")
    median = {k: statistics.median(v) for k, v in rates.items()}

    def most(key, library, absent=None):
        """The largest `key` over the library's runs (`absent`: a run's value without it;
        None: every run must have it)."""
        return max(r[key] if absent is None else r.get(key, absent)
                   for r in lines if r["library"] == library)

    summary = dict(
        summary=True, label=FLAGS.label, encoder=FLAGS.encoder, batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size, precision=precision, augment=FLAGS.augment,
        device=lines[0].get("device", "cpu"), keras_backend=FLAGS.backend,
        ours_flags=FLAGS.ours_flags, byol_tf_images_per_s=round(median["byol_tf"], 2),
        peer_images_per_s=round(median["byol-pytorch"], 2),
        ours_over_peer=round(median["byol_tf"] / median["byol-pytorch"], 3),
        byol_tf_runs=rates["byol_tf"], peer_runs=rates["byol-pytorch"],
        byol_tf_peak_rss_mb=most("peak_rss_mb", "byol_tf"),
        peer_peak_rss_mb=most("peak_rss_mb", "byol-pytorch"),
        byol_tf_rss_anon_mb=most("rss_anon_mb", "byol_tf", absent=0),
        peer_rss_anon_mb=most("rss_anon_mb", "byol-pytorch", absent=0),
        page_cache_dropped=FLAGS.drop_caches,
        # Rounds in which no timed repeat was free of other processes' load (bench/load.py):
        disturbed_rounds=sorted({r["round"] for r in lines if r.get("disturbed")}),
        others_cpu_share_max=max((s for r in lines for s in r.get("others_cpu_share_runs", [])
                                  if s is not None), default=None),
        **({} if FLAGS.device == "cpu" else dict(
            byol_tf_device_peak_mb=most("device_peak_mb", "byol_tf"),
            peer_device_peak_mb=most("device_peak_mb", "byol-pytorch"))),
        encoder_parameters=ours_params, torch=lines[1]["torch"],
        byol_pytorch=lines[1]["byol_pytorch"], tensorflow=lines[0].get("tensorflow"),
        jax=lines[0].get("jax"),
        keras=lines[0].get("keras"), **host(), date=time.strftime("%Y-%m-%d %H:%M"))
    if FLAGS.baseline:
        summary.update(baseline=FLAGS.baseline,
                       baseline_images_per_s=round(statistics.median(rates[BASELINE]), 2),
                       baseline_over_peer=round(statistics.median(rates[BASELINE]) /
                                                median["byol-pytorch"], 3),
                       baseline_runs=rates[BASELINE],
                       baseline_peak_rss_mb=most("peak_rss_mb", BASELINE))
    report(lines, summary, FLAGS.out)


if __name__ == "__main__":
    app.run(main)
