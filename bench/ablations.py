"""The papers' ablations and the sibling methods, each a full train.py run per seed, as a table.

    python bench/ablations.py run --dataset=cifar10 --data_dir=DIR --preset=cifar10_cpu_short \
        --epochs=5 --seeds=0,1 --segment_minutes=120 --out=bench/results/ablations_cifar10.jsonl
    python bench/ablations.py linear --dataset=cifar10 --data_dir=DIR --epochs=5 --seeds=0 \
        --linear=byol,no_predictor --out=bench/results/ablations_cifar10.jsonl
    python bench/ablations.py table --dataset=cifar10 --epochs=5 \
        --out=bench/results/ablations_cifar10.jsonl --page=docs/ablations.md

`run` trains every variant (or `--only`) once per seed with the same data, encoder, epochs and
seed list, in time-limited segments: a run cut by `--segment_minutes` resumes from its
checkpoints when the same command is given again, and runs already recorded are skipped. Each
finished run appends one JSON line: the variant, seed, data, kNN top-1 (k = 200, cosine,
T = 0.1, on the whole test split), the collapse metric `projection_std` of the last epoch
(std over the batch of l2-normalised projections, mean over dimensions: ≈ 1/√d spread out,
→ 0 collapsed), the final loss, steps, wall seconds, host and command; `--curves=NAMES`
measures kNN every `--curve_every` epochs (default 1) for those variants. `linear` probes
finished runs whose folders are in `--work_dir` (eval.py's linear protocol, `--linear_epochs`)
and appends one line per probe to `<out>_linear.jsonl`. `table` writes the page: mean ± half
the range over seeds per row, the linear top-1 where probed, the papers' claims beside them,
whether the runs agree, the learning curves as a picture, and the siblings' curves of the
longest budget that measured them (which way BYOL's order against each goes, and whether it
crosses):

    python bench/ablations.py run --dataset=cifar10 --data_dir=DIR --preset=cifar10_cpu_short \
        --epochs=100 --curves=byol,simclr,moco_v2 --curve_every=5 --only=byol,simclr \
        --seeds=0 --segment_minutes=130 --work_dir=runs/ablations/cifar10-e100 \
        --out=bench/results/ablations_cifar10.jsonl
"""

import collections
import json
import pathlib
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]

NO_COLOUR = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
MICRO_BATCHES = (512, 128, 64, 32)  # Figure 3a's batch-norm batches within an optimizer batch
# name → (method, method options, encoder suffix, extra train.py flags)
VARIANTS = {
    "byol": ("byol", {}, "", {}),
    "no_predictor": ("byol", {"use_predictor": False}, "", {}),
    "tau_0": ("byol", {"tau_base": 0.0, "tau_schedule": "constant"}, "", {}),
    "tau_1": ("byol", {"tau_base": 1.0, "tau_schedule": "constant"}, "", {}),
    "beta_0.5": ("byol", {"beta": 0.5}, "", {}),
    "beta_1": ("byol", {"beta": 1.0}, "", {}),
    "projector_bn_only": ("byol", {"predictor_norm": "none"}, "", {}),
    "predictor_bn_only": ("byol", {"projector_norm": "none"}, "", {}),
    "heads_layer_norm": ("byol", {"projector_norm": "layer_norm", "predictor_norm": "layer_norm"},
                         "", {}),
    "heads_no_norm": ("byol", {"projector_norm": "none", "predictor_norm": "none"}, "", {}),
    "no_batch_norm": ("byol", {"projector_norm": "none", "predictor_norm": "none"}, "_nonorm", {}),
    "no_batch_stats_gnws": ("byol", {"projector_norm": "layer_norm",
                                     "predictor_norm": "layer_norm"}, "_gnws", {}),
    "byol_batch32": ("byol", {}, "", {"batch_size": 32}),
    "byol_crop_flip": ("byol", {"view1": NO_COLOUR, "view2": NO_COLOUR}, "", {}),
    "simclr": ("simclr", {"temperature": 0.5}, "", {}),
    "simclr_batch32": ("simclr", {"temperature": 0.5}, "", {"batch_size": 32}),
    "simclr_crop_flip": ("simclr", {"temperature": 0.5, "view1": NO_COLOUR, "view2": NO_COLOUR},
                         "", {}),
    "moco_v2": ("moco", {}, "", {}),  # queue_size from --moco_queue
    "multiview_cl": ("multiview", {"lambda_fp": 0.0, "lambda_ip": 0.0}, "", {}),
    "multiview_cl_fp": ("multiview", {"lambda_ip": 0.0}, "", {}),
    "multiview": ("multiview", {}, "", {}),
    # Figure 3a the paper's way: the same optimizer steps and learning rate at every row (an
    # optimizer batch of 512), batch norm over micro-batches of 512 / 128 / 64 / 32.
    **{f"{method}_b512_micro{micro}": (method, options, "", dict(
        batch_size=512, **({"accumulation_steps": 512 // micro} if micro < 512 else {})))
       for method, options in (("byol", {}), ("simclr", {"temperature": 0.5}))
       for micro in MICRO_BATCHES},
    # Recipe knobs for short runs (views given in part keep the preset's other keys).
    "tau_constant": ("byol", {"tau_schedule": "constant"}, "", {}),
    "crop_area_0.2": ("byol", {"view1": {"crop_area": [0.2, 1.0]},
                               "view2": {"crop_area": [0.2, 1.0]}}, "", {}),
}
# The rows of the papers' findings, in the order of the page.
GRID = ["byol", "no_predictor", "tau_1", "tau_0", "byol_batch32", "simclr", "simclr_batch32",
        "byol_crop_flip", "simclr_crop_flip", "no_batch_norm", "no_batch_stats_gnws", "moco_v2",
        "multiview_cl", "multiview_cl_fp", "multiview"]


# Figure 3a's rows (`--only=` them: not in the grid's default).
FIGURE_3A = [f"{m}_b512_micro{micro}" for m in ("byol", "simclr") for micro in MICRO_BATCHES]


flags.DEFINE_string("dataset", "sample", "train.py --dataset")
flags.DEFINE_string("data_dir", None, "train.py --data_dir")
flags.DEFINE_string("preset", None, "train.py --preset")
flags.DEFINE_string("encoder", "tiny_resnet_cifar", "Encoder (a variant may add a suffix).")
flags.DEFINE_integer("epochs", 10, "Epochs of every run.")
flags.DEFINE_integer("batch_size", 128, "Batch of every run (a variant may set its own).")
flags.DEFINE_integer("moco_queue", 4096, "MoCo v2's queue size.")
flags.DEFINE_string("seeds", "0", "Comma-separated seeds; one run each.")
flags.DEFINE_string("train_flags", "", "Comma-separated extra train.py flags for every run, e.g. "
                    "--base_lr=4e-3.")
flags.DEFINE_string("only", ",".join(GRID), "Comma-separated variant names.")
flags.DEFINE_string("linear", "", "linear: the variants to probe (their runs' folders kept).")
flags.DEFINE_integer("linear_epochs", 30, "Epochs of the linear probe.")
flags.DEFINE_float("linear_minutes", 25, "linear: start no probe with less of the segment left.")
flags.DEFINE_string("curves", "", "Variants that kNN-evaluate during training (--curve_every).")
flags.DEFINE_integer("curve_every", 1, "The curves' kNN every this many epochs.")
flags.DEFINE_float("segment_minutes", None, "Stop (resumably) after this many minutes.")
flags.DEFINE_string("work_dir", "runs/ablations", "Where the runs' folders go.")
flags.DEFINE_string("out", None, "JSON lines, one per finished run.", required=True)
flags.DEFINE_string("page", None, "table: the Markdown page to write.")
FLAGS = flags.FLAGS


def names(text):
    listed = [n for n in text.split(",") if n]
    unknown = sorted(set(listed) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    return listed


def train_command(args, name, seed):
    method, options, suffix, extra = VARIANTS[name]
    if method == "moco":
        options = dict(options, queue_size=args.moco_queue)
    flags = dict(dataset=args.dataset, encoder=args.encoder + suffix, epochs=args.epochs,
                 batch_size=args.batch_size, method=method, method_options=json.dumps(options),
                 seed=seed, run_dir=pathlib.Path(args.work_dir) / f"{name}-seed{seed}",
                 noknn_random_init=None)
    flags.update(extra)  # a variant's own flags (its batch) replace the common ones
    if args.data_dir:
        flags["data_dir"] = args.data_dir
    if args.preset:
        flags["preset"] = args.preset
    if name in names(args.curves):
        flags["knn_every"] = args.curve_every
    command = ["train.py", *[f"--{k}" if v is None else f"--{k}={v}" for k, v in flags.items()],
               *[f for f in args.train_flags.split(",") if f]]
    return command, flags["run_dir"], options


def run_one(args, name, seed, deadline):
    from byol_tf import records

    command, run_dir, options = train_command(args, name, seed)
    limit = [] if deadline is None else [f"--time_limit_minutes={(deadline - time.time()) / 60:.2f}"]
    result = subprocess.run([sys.executable, *command, *limit], cwd=ROOT, capture_output=True,
                            text=True)
    if result.returncode:
        raise SystemExit(f"{name} seed {seed} failed:\n{result.stderr[-3000:]}")
    metrics_file = ROOT / run_dir / "metrics.json"
    if not metrics_file.exists():
        return None  # stopped at the time limit: the same command resumes it
    metrics = json.loads(metrics_file.read_text())
    history, config = metrics["history"], json.loads((ROOT / run_dir / "config.json").read_text())
    row = dict(variant=name, method=VARIANTS[name][0], options=options,
               encoder=args.encoder + VARIANTS[name][2], seed=seed, dataset=args.dataset,
               epochs=args.epochs, batch_size=config["config"]["batch_size"],
               steps=metrics["final_step"], train_examples=metrics["knn"]["train_examples"],
               test_examples=metrics["knn"]["test_examples"], knn_top1=metrics["knn"]["pretrained"],
               projection_std=history["projection_std"][-1], loss=history["loss"][-1],
               seconds=wall_seconds(metrics),
               history=kept_history(history),
               command=public_command(" ".join(command)),
               driver=this_command(),
               **records.host())
    return row


def kept_history(history):
    """The per-epoch series a row keeps: kNN top-1, projection_std, the loss and, where the
    loss is a sum (the multi-view objective), each of its terms (`loss_cl`, `loss_fp`, ...)."""
    return {k: v for k, v in history.items()
            if k in ("knn_top1", "projection_std", "loss") or k.startswith("loss_")}


def wall_seconds(metrics):
    """A run's wall seconds: its phases as recorded, plus the training of the segments before
    the last (a resumed run's `train` phase times only the last process)."""
    earlier = sum(segment["train_seconds"] for segment in metrics.get("segments", [])[:-1])
    return round(sum(v or 0 for v in metrics["phase_seconds"].values()) + earlier, 1)


def recorded(path):
    if not pathlib.Path(path).exists():
        return []
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines() if line]


def segment_deadline(args):
    """When this segment ends (time.time()), or None without --segment_minutes."""
    return time.time() + 60 * args.segment_minutes if args.segment_minutes else None


def this_command():
    """This driver's command as results record it (`public_command`)."""
    return public_command(" ".join(["python", "bench/ablations.py", *sys.argv[1:]]))


def linear_path(out):
    """Where the linear probes of the runs in `out` are recorded."""
    out = pathlib.Path(out)
    return out.with_name(f"{out.stem}_linear.jsonl")


def linear(args):
    """Linear probes (eval.py --mode=linear) of the recorded runs of `--linear` × `--seeds`,
    one JSON line each in `linear_path(--out)`; probes already recorded are skipped."""
    from byol_tf import records

    deadline = segment_deadline(args)
    trained = {(r["variant"], r["seed"]) for r in recorded(args.out)
               if r["dataset"] == args.dataset and r["epochs"] == args.epochs}
    out = linear_path(args.out)
    probed = {(r["variant"], r["seed"], r["dataset"], r["epochs"]) for r in recorded(out)}
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in names(args.linear):
            if (name, seed, args.dataset, args.epochs) in probed:
                continue
            if (name, seed) not in trained:
                print(f"{name} seed {seed}: no recorded run of {args.epochs} epochs; skipped")
                continue
            encoder = pathlib.Path(args.work_dir) / f"{name}-seed{seed}" / "encoder.keras"
            if not (ROOT / encoder).exists():
                print(f"{name} seed {seed}: {encoder} is gone; train the run again (delete its "
                      "line) to probe it")
                continue
            if deadline is not None and deadline - time.time() < 60 * args.linear_minutes:
                print("segment over; run the same command again to continue")
                return
            metrics = encoder.parent / f"eval_linear_{args.linear_epochs}_epochs.json"
            command = ["eval.py", f"--model={encoder}", "--mode=linear",
                       f"--dataset={args.dataset}", f"--epochs={args.linear_epochs}",
                       f"--seed={seed}", f"--out={metrics}",
                       *([f"--data_dir={args.data_dir}"] if args.data_dir else [])]
            start = time.time()
            done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True,
                                  text=True)
            if done.returncode:
                raise SystemExit(f"linear probe of {name} seed {seed} failed:\n"
                                 f"{done.stderr[-3000:]}")
            result = json.loads((ROOT / metrics).read_text())
            row = dict(variant=name, seed=seed, dataset=args.dataset, epochs=args.epochs,
                       linear_top1=result["top1"], linear_top5=result["top5"],
                       linear_epochs=args.linear_epochs, train_examples=result["train_examples"],
                       test_examples=result["test_examples"],
                       seconds=round(time.time() - start, 1),
                       command=public_command(" ".join(command)),
                       driver=this_command(), **records.host())
            print(json.dumps(row), flush=True)
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print("all probes recorded")


def run(args):
    deadline = segment_deadline(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    done = {(r["variant"], r["seed"], r["dataset"], r["epochs"]) for r in recorded(args.out)}
    for seed in seeds:  # every row's first seed before any row's second
        for name in names(args.only):
            if (name, seed, args.dataset, args.epochs) in done:
                continue
            if deadline is not None and deadline - time.time() < 60:
                print("segment over; run the same command again to continue")
                return
            row = run_one(args, name, seed, deadline)
            if row is None:
                print(f"segment over during {name} seed {seed}; run the same command again")
                return
            print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
    print("all runs recorded")


# ------------------------------------------------------------------------------- the page
# A claim: the paper's statement with its source (table or figure and the numbers quoted,
# each in QUOTES), the test of our means (the difference the claim predicts, the rows whose
# spreads bound it) and what the claim expects of that difference: "direction" (> 0), "large"
# (clearly > 0: no difference beyond the spreads is a disagreement too) or "close" (within
# the spreads of 0).
Claim = collections.namedtuple("Claim", "text test expects")
# Each finding: (heading, its rows, its claims; a claim of two parts is two claims).
FINDINGS = [
    ("The predictor", ["byol", "no_predictor"], [Claim(
        "Without the predictor the representation collapses (Grill et al. 2020, Table 5b).",
        lambda m: (m["byol"] - m["no_predictor"], ["byol", "no_predictor"]), "large")]),
    ("A fixed random target", ["byol", "tau_1"], [Claim(
        "τ = 1 (the target stays at its random init) learns far less than a moving-average "
        "target (Grill et al. 2020, Table 5a, 300 epochs: 18.8 ± 0.7% top-1 against 72.5%).",
        lambda m: (m["byol"] - m["tau_1"], ["byol", "tau_1"]), "large")]),
    ("Target = online", ["byol", "tau_0"], [Claim(
        "τ = 0 (the target is the online network) is unstable and learns almost nothing "
        "(Grill et al. 2020, Table 5a, 300 epochs: 0.3% top-1).",
        lambda m: (m["byol"] - m["tau_0"], ["byol", "tau_0"]), "large")]),
    ("Smaller batches", ["byol", "byol_batch32", "simclr", "simclr_batch32"], [Claim(
        "BYOL loses less than SimCLR when the batch shrinks (Grill et al. 2020, Figure 3a).",
        lambda m: ((m["simclr"] - m["simclr_batch32"]) - (m["byol"] - m["byol_batch32"]),
                   ["byol", "byol_batch32", "simclr", "simclr_batch32"]), "direction")]),
    ("Smaller batches at equal optimizer steps (micro-batches of one batch of 512)", FIGURE_3A,
     [Claim("BYOL loses less than SimCLR when the batch shrinks (Grill et al. 2020, Figure 3a).",
        lambda m: ((m["simclr_b512_micro512"] - m["simclr_b512_micro32"])
                   - (m["byol_b512_micro512"] - m["byol_b512_micro32"]),
                   ["byol_b512_micro512", "byol_b512_micro32", "simclr_b512_micro512",
                    "simclr_b512_micro32"]), "direction")]),
    ("No colour augmentation", ["byol", "byol_crop_flip", "simclr", "simclr_crop_flip"], [Claim(
        "BYOL loses less than SimCLR with crops and flips only (Grill et al. 2020, Figure 3b).",
        lambda m: ((m["simclr"] - m["simclr_crop_flip"]) - (m["byol"] - m["byol_crop_flip"]),
                   ["byol", "byol_crop_flip", "simclr", "simclr_crop_flip"]), "direction")]),
    ("No batch norm anywhere", ["byol", "no_batch_norm"], [Claim(
        "Without batch norm in the encoder and the heads BYOL learns far less (Fetterman & "
        "Albrecht 2020; Richemond et al. 2020, Table 1).",
        lambda m: (m["byol"] - m["no_batch_norm"], ["byol", "no_batch_norm"]), "large")]),
    ("No batch statistics (GroupNorm + weight standardisation)",
     ["byol", "no_batch_stats_gnws", "no_batch_norm"], [
         Claim("With GroupNorm and weight standardisation, and no batch statistics at all, "
               "BYOL learns: far above the same network without normalisation (Richemond et "
               "al. 2020).",
               lambda m: (m["no_batch_stats_gnws"] - m["no_batch_norm"],
                          ["no_batch_stats_gnws", "no_batch_norm"]), "large"),
         Claim("… and close to the batch-norm baseline (Richemond et al. 2020, abstract: "
               "“73.9% vs. 74.3% top-1 accuracy under the linear evaluation protocol on "
               "ImageNet”).",
               lambda m: (m["byol"] - m["no_batch_stats_gnws"], ["byol", "no_batch_stats_gnws"]),
               "close")]),
    ("Contrastive siblings", ["byol", "simclr", "moco_v2"], [
        Claim("BYOL is above SimCLR at the same budget (Grill et al. 2020, Table 5b, 300 "
              "epochs: 72.5% top-1 against 69.4% for the SimCLR objective).",
              lambda m: (m["byol"] - m["simclr"], ["byol", "simclr"]), "direction"),
        Claim("BYOL is above MoCo v2 (Grill et al. 2020, Table 1, at different budgets: 74.3% "
              "top-1 after 1000 epochs against MoCo v2's 71.1% after 800).",
              lambda m: (m["byol"] - m["moco_v2"], ["byol", "moco_v2"]), "direction")]),
    ("The multi-view objective", ["multiview_cl", "multiview_cl_fp", "multiview"], [Claim(
        "Adding forward-predictive (L_FP) and inverse-predictive (L_IP) terms to the "
        "contrastive L_CL helps (Tsai et al. 2021, the experiments' figures).",
        lambda m: (m["multiview"] - m["multiview_cl"], ["multiview", "multiview_cl"]),
        "direction")]),
]
# Every number a claim quotes, with where it is in the paper; a test checks the claims quote
# no other.
QUOTES = {
    "18.8 ± 0.7%": "Grill et al. 2020, Table 5a: τ_base = 1 (constant random target)",
    "72.5%": "Grill et al. 2020, Tables 5a and 5b: BYOL at 300 epochs (the ablations' baseline)",
    "0.3%": "Grill et al. 2020, Table 5a: τ_base = 0 (stop-gradient of the online network)",
    "69.4%": "Grill et al. 2020, Table 5b: the SimCLR objective at 300 epochs",
    "74.3%": "Grill et al. 2020, Table 1 (ResNet-50, 1000 epochs); Richemond et al. 2020, abstract",
    "71.1%": "Grill et al. 2020, Table 1: MoCo v2, 800 epochs",
    "73.9%": "Richemond et al. 2020, abstract: GN + WS",
    "300 epochs": "Grill et al. 2020, Section 5: the ablations' training length",
    "1000 epochs": "Grill et al. 2020, Table 1: BYOL's ResNet-50",
}


# What we found where a finding's rows disagree with the paper or do not separate: the switch
# checked, the recipe's differences that matter; shown under the finding's verdicts. A note
# that quotes the runs is a function of them (the rows of the page's budget, and the runs at
# other budgets).
def rows_of(rows, variant):
    return sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seed"])


def base_lr_at(batch):
    """The grid recipe's learning rate at `batch` (its base × batch / 256)."""
    from byol_tf.training import recipes

    return recipes.RECIPES["cifar10_cpu_short"]["base_lr"] * batch / 256


def rises(values):
    """The epochs (1-based) whose value is above the epoch before's."""
    return [i + 1 for i in range(1, len(values)) if values[i] > values[i - 1]]


def target_online_note(rows, others=()):
    runs = rows_of(rows, "tau_0")
    losses = [r["history"]["loss"] for r in runs if r.get("history", {}).get("loss")]
    risen = [f"seed {r['seed']} at epoch{'s' * (len(rises(r['history']['loss'])) > 1)} "
             f"{', '.join(map(str, rises(r['history']['loss'])))}"
             for r in runs if rises(r.get("history", {}).get("loss", []))]
    falls = (f"the loss falls from {min(h[0] for h in losses):.2f}–{max(h[0] for h in losses):.2f} "
             f"after the first epoch to {min(h[-1] for h in losses):.2f}–"
             f"{max(h[-1] for h in losses):.2f} after the last"
             + (f", with small rises on the way ({'; '.join(risen)})" if risen else "")
             if losses else "the loss falls")
    return ("The switch does what the paper describes: with τ = 0 the target equals the online "
            f"network after every step (`tests/test_methods.py`). In these runs {falls}, and "
            "projection_std stays beside the baseline's (no collapse; the per-epoch history is "
            "in the results file). What differs from the paper's setting is the recipe: AdamW "
            f"at a learning rate of {base_lr_at(128):g} ({base_lr_at(256):g} × 128/256), batch "
            "128, 15 epochs of CIFAR-10 here; LARS at batch 4096 for 300 epochs of ImageNet "
            "there. SimSiam (Chen & He 2021) also learns without an EMA target: the predictor and "
            "the stop-gradient suffice there too.")


def smaller_batches_note(rows, others=()):
    knn = summary(rows, "knn_top1")
    small = rows_of(rows, "byol_batch32")
    low = min(small, key=lambda r: r["knn_top1"])
    high = max(small, key=lambda r: r["knn_top1"])
    first_loss = {r["seed"]: r["history"]["loss"][0] for r in small}
    same_host = low["cpu"] == high["cpu"] and low["isa"] == high["isa"]
    projection = [r["projection_std"] for r in small]
    return (
        "The difference tested is (SimCLR's loss of accuracy) − (BYOL's) when the batch goes "
        f"from 128 to 32. Both lose, SimCLR more ({knn['simclr'][0] - knn['simclr_batch32'][0]:.3f} "
        f"against {knn['byol'][0] - knn['byol_batch32'][0]:.3f} on average), the direction the "
        f"paper reports, but BYOL's {len(small)} batch-32 seeds spread widely "
        f"({', '.join(format(r['knn_top1'], '.3f') for r in small)}) and the difference stays inside "
        "the spreads. No batch-32 run collapses (projection_std "
        f"{min(projection):.3f}–{max(projection):.3f} against the baseline's "
        f"{projection_std_mean(rows, 'byol'):.3f}). The low seed (seed {low['seed']}) starts slower: its loss "
        f"after the first epoch is {first_loss[low['seed']]:.2f} against seed {high['seed']}'s "
        f"{first_loss[high['seed']]:.2f}" + (
            f"; seeds {low['seed']} and {high['seed']} ran on the same host, so the spread is not "
            "the host's" if same_host else "") +
        ". The batch-32 runs keep the 15 epochs, scale the learning rate linearly "
        f"({base_lr_at(256):g} × 32/256 = {base_lr_at(32):g}) and update the target every step, "
        "four times as often per epoch as at batch 128; the paper's runs are LARS for 300 "
        "epochs of ImageNet.")


def projection_std_mean(rows, variant):
    return summary(rows, "projection_std")[variant][0]


MULTIVIEW_ROWS = ("multiview_cl", "multiview_cl_fp", "multiview")


def multiview_note(rows, others=()):
    traced = [r for r in rows if r["variant"].startswith("multiview")
              and "loss_cl" in r.get("history", {})]
    with_fp = [r["history"] for r in traced if r["history"]["loss_fp"][-1] > 0]
    full = [r["history"] for r in traced if r["variant"] == "multiview"]
    seeds = sorted({r["seed"] for r in traced})
    knn = summary(rows, "knn_top1")
    import inspect

    from byol_tf.multiview import MultiView

    lam = inspect.signature(MultiView.__init__).parameters["lambda_fp"].default

    def span(values, f="{:.2f}"):
        return (f.format(min(values)) if f.format(min(values)) == f.format(max(values))
                else f"{f.format(min(values))}–{f.format(max(values))}")

    last_fp = [h["loss_fp"][-1] for h in with_fp]
    terms = (
        f"at the last epoch λ_FP·L_FP ≈ {lam:g} × {np.mean(last_fp):.0f} ≈ "
        f"{lam * np.mean(last_fp):.2f}, as large as L_CL ({span([r['history']['loss_cl'][-1] for r in traced])}), "
        f"and L_IP ≈ {span([h['loss_ip'][-1] for h in full])} (each term's per-epoch history is "
        f"in the results file for seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"
        if with_fp and full else "")
    return (
        "The three terms equal their formulas computed in numpy (`tests/test_losses.py`: "
        "InfoNCE, the forward- and inverse-predictive losses)"
        + (f", and each is active in these runs: {terms}" if terms else "") + ". Over "
        f"{knn['multiview'][2]} seeds the three objectives end within BYOL's seed-to-seed spread "
        f"of one another ({', '.join(format(knn[n][0], '.3f') for n in MULTIVIEW_ROWS)}): "
        "at this budget the added terms neither help nor hurt the kNN accuracy."
        + (f" L_FP itself falls only from {span([h['loss_fp'][0] for h in with_fp], '{:.1f}')} to "
           f"{span(last_fp, '{:.1f}')} over the 15 epochs: the decoder learns little of the other "
           "view in this budget." if with_fp else ""))


def siblings_note(rows, others=()):
    long = long_budget(others, rows[0]["epochs"])
    return (
        "The contrastive losses equal their papers' formulas computed in numpy "
        "(`tests/test_losses.py`: NT-Xent, MoCo's InfoNCE). The papers rank the methods after "
        "hundreds of epochs of ImageNet at batch 256–4096; these runs are 15 epochs of CIFAR-10 "
        "at batch 128. Twice the budget does not change the order against SimCLR (see [The "
        "budget](#the-budget)): at 30 epochs BYOL reaches 0.596 and SimCLR 0.635 (2 seeds "
        "each); BYOL gains more (+0.057 against +0.046), so the gap narrows from 0.050 to "
        "0.039 but stays well outside the spreads. " + (
            f"How the order goes over {long} epochs: [The siblings over {long} epochs]"
            f"(#the-siblings-over-{long}-epochs)." if long else
            "Whether BYOL overtakes at the papers' hundreds of epochs is not measured here."))


NOTES = {
    "Target = online": target_online_note,
    "Smaller batches": smaller_batches_note,
    "No batch statistics (GroupNorm + weight standardisation)": (
        "The first verdict tests GN + WS against the same network without normalisation, the "
        "second against the batch-norm baseline. "
        "The switch is tested: `WSConv2D` equals a convolution with a kernel standardised in "
        "numpy, and the online network computes each image alone as in its batch "
        "(`tests/test_layers.py`, `tests/test_encoders.py`). Both runs learn late: their "
        "projections fall to near a constant within the first 25 steps (seed 0: projection_std "
        "0.0016 against the baseline's 0.066 at steps 176–200), stay there for the first four "
        "epochs (seed 0) or three (seed 1), then recover (seed 0: 0.020 at epoch 6, 0.038–0.040 "
        "from epoch 8 on; seed 1: 0.029 at epoch 5, 0.044–0.047 from epoch 9 on; the per-epoch "
        "history is in the results file); the seed that recovers sooner ends higher (kNN 0.424 "
        "against 0.388). Over those first 200 steps the same GN + WS encoder with batch-norm "
        "heads learns beside the baseline (0.064), so the slow start comes from the layer-norm "
        "heads; a warm-up or a ten times smaller learning rate did not prevent it there "
        "(`bench/results/gnws_heads.md`). Three or four of fifteen epochs lost is a large share "
        "of this budget; Richemond et al. trained on ImageNet with BYOL's LARS recipe, this "
        "recipe is AdamW at batch 128 for 15 epochs of CIFAR-10."),
    "The multi-view objective": multiview_note,
    "Contrastive siblings": siblings_note,
}


def note(heading, rows, others=()):
    """The note under a finding (NOTES), its numbers from `rows` (and the runs at other
    budgets, `others`) where it quotes the runs."""
    text = NOTES.get(heading)
    return text(rows, others) if callable(text) else text


def summary(rows, key):
    """{variant: (mean, half the range over seeds, number of seeds, the seeds)} of `key`."""
    out = {}
    for name in {r["variant"] for r in rows}:
        measured = [r for r in rows if r["variant"] == name and key in r]
        if measured:
            values = [r[key] for r in measured]
            out[name] = (float(np.mean(values)), (max(values) - min(values)) / 2, len(values),
                         tuple(r["seed"] for r in measured))
    return out


def verdict(claim, names, knn):
    """'agrees' / 'disagrees' / 'within the spread' for one `Claim` of a finding with rows
    `names`, with the difference and the spread it was held against; None without rows.
    A row's spread is at least the baseline's (`byol`): one seed, or two that happen to agree,
    say less of the seed-to-seed noise than the baseline's seeds do. A difference inside the
    spread is a disagreement with a claim of a large effect and an agreement with a claim of
    closeness."""
    if any(n not in knn for n in names):
        return None
    difference, spread_of = claim.test({n: v[0] for n, v in knn.items()})
    floor = knn["byol"][1] if "byol" in knn else 0.0
    spread = sum(max(knn[n][1], floor) for n in spread_of)
    single = [n for n in names if knn[n][2] < 2]  # a spread of one seed is unknown, not 0
    numbers = f"{difference:+.3f}, spread {spread:.3f}"
    caveat = f"; provisional: one seed of {', '.join(single)}" if single else ""
    inside = abs(difference) <= spread
    if claim.expects == "close":
        word = "agrees" if inside else "disagrees"
    elif inside:
        word = "within the spread" if claim.expects == "direction" else "disagrees"
        if claim.expects == "large":
            numbers += ": no difference beyond the seeds' spread where the paper reports a large one"
    else:
        word = "agrees" if difference > 0 else "disagrees"
    return f"{word} ({numbers}{caveat})"


def public_command(driver):
    """The driver's command as the page shows it: no home folder, no segment or variant choice."""
    words = [w.replace(str(pathlib.Path.home()), "~") for w in driver.split()
             if not w.startswith(("--only=", "--segment_minutes="))]
    return " ".join(words)


def reproducing_commands(rows, choice):
    """The driver commands (`run` or `linear`) that make `rows`: their drivers' common command
    (`public_command`, which drops `--only`) without seeds or probed variants, once per set of
    seeds that share a set of variants, naming the variants with `choice` (`--only`, left out
    for the whole grid, or `--linear`)."""
    drivers = [r["driver"] for r in rows]
    base = [w for w in public_command(max(drivers[::-1], key=drivers.count)).split()
            if not w.startswith(("--seeds=", "--linear="))]
    variants = {}
    for r in rows:
        variants.setdefault(r["seed"], set()).add(r["variant"])
    order = GRID + sorted(set(VARIANTS) - set(GRID))
    groups = {}  # variants → seeds, in the order of the seeds
    for seed in sorted(variants):
        groups.setdefault(tuple(n for n in order if n in variants[seed]), []).append(seed)
    commands = []
    for group, seeds in groups.items():
        named = [] if choice == "--only" and set(group) == set(GRID) else [
            f"{choice}={','.join(group)}"]
        commands.append(" ".join(base + [f"--seeds={','.join(map(str, seeds))}"] + named))
    return commands


def cell(table, n, f="{:.3f}"):
    """A table's cell: mean ± half the range (seeds); one seed has no spread."""
    if n not in table:
        return "—"
    mean, spread, seeds = table[n][:3]
    return f"{f.format(mean)} ({seeds})" if seeds < 2 else (
        f"{f.format(mean)} ± {f.format(spread)} ({seeds})")


def linear_cell(linear, knn, n):
    """The linear column's cell: as `cell`, naming the probed seeds where they are not the
    kNN column's."""
    if n not in linear:
        return "—"
    seeds = sorted(linear[n][3])
    text = cell({n: linear[n][:3]}, n)
    if n in knn and seeds == sorted(knn[n][3]):
        return text
    return f"{text.rsplit(' (', 1)[0]} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"


def hosts_line(rows):
    """Which seeds of which rows ran on which host."""
    by_host = {}
    for r in rows:
        host = f"{r['cpu']}, {r['cores']} cores ({', '.join(r['isa'])})"
        by_host.setdefault(host, {}).setdefault(r["variant"], []).append(r["seed"])
    order = GRID + sorted(set(VARIANTS) - set(GRID))
    parts = [f"{host}: " + ", ".join(f"{n} {'/'.join(map(str, sorted(v[n])))}" for n in order
                                      if n in v) for host, v in sorted(by_host.items())]
    return (f"{'Host' if len(by_host) == 1 else 'Hosts'} (variant and seeds): "
            + "; ".join(parts) + ".")


def budgets_section(rows, others):
    """The budget of `rows` beside `others` (runs of the same dataset at other epochs): the
    kNN top-1 of each variant run at more than one budget, and the commands of `others`."""
    if not others:
        return []
    epochs = rows[0]["epochs"]
    by_budget = {epochs: rows}
    for r in others:
        by_budget.setdefault(r["epochs"], []).append(r)
    order = GRID + sorted(set(VARIANTS) - set(GRID))
    shared = [n for n in order
              if sum(any(r["variant"] == n for r in b) for b in by_budget.values()) > 1]
    knn = {e: summary(b, "knn_top1") for e, b in by_budget.items()}
    pilots = [f"± {knn[e]['byol'][1]:.3f} at {e} epochs ({knn[e]['byol'][2]} seeds)"
              for e in sorted(by_budget)
              if e < epochs and "byol" in knn[e] and knn[e]["byol"][2] > 1]
    lines = ["## The budget", "",
             f"The grid runs {epochs} epochs: BYOL's seeds spread by ± "
             f"{knn[epochs]['byol'][1]:.3f} there, several times less than the papers' effects"
             if "byol" in knn[epochs] else f"The grid runs {epochs} epochs"]
    lines[-1] += (f"; shorter pilots: {'; '.join(pilots)}." if pilots else ".")
    lines[-1] += (" The variants run at more than one budget, kNN top-1 (seeds) on the same "
                  "test images:")
    lines += ["", "| epochs | steps | " + " | ".join(shared) + " |",
              "|---" * (len(shared) + 2) + "|"]
    for e in sorted(by_budget):
        steps = sorted({r["steps"] for r in by_budget[e] if r["variant"] in shared})
        lines.append(f"| {e}{' (this page)' if e == epochs else ''} | "
                     f"{', '.join(f'{s:,}' for s in steps) or '—'} | "
                     + " | ".join(cell(knn[e], n) for n in shared) + " |")
    lines += ["", "The commands of the other budgets:", "", "```"]
    for e in sorted(by_budget):
        if e != epochs:
            lines += reproducing_commands(by_budget[e], "--only")
    return lines + ["```", ""]


SIBLINGS = ("byol", "simclr", "moco_v2")
SIBLING_NAMES = {"byol": "BYOL", "simclr": "SimCLR", "moco_v2": "MoCo v2"}


def measured(history):
    """[(epoch, kNN top-1)] where a run's history has the kNN (1-based epochs)."""
    return [(i + 1, v) for i, v in enumerate(history.get("knn_top1") or []) if v is not None]


def order_over_epochs(a, b, means):
    """How the order of variants `a` and `b` goes over the epochs of `means` ({variant:
    {epoch: (mean, ...)}}, the same epochs for both): who is ahead, by how much at the first and the
    last epoch, and whether (where) the order changes."""
    epochs = sorted(means[a])
    gaps = [(e, means[a][e][0] - means[b][e][0]) for e in epochs]
    changes = [gaps[i][0] for i in range(1, len(gaps)) if (gaps[i][1] > 0) != (gaps[i - 1][1] > 0)]
    name = SIBLING_NAMES
    spread = means[a][epochs[-1]][1] + means[b][epochs[-1]][1]
    gap = (f"{name[a]} − {name[b]}: {gaps[0][1]:+.3f} at epoch {gaps[0][0]}, "
           f"{gaps[-1][1]:+.3f} at epoch {gaps[-1][0]}"
           + (f", inside the seeds' spread there ({spread:.3f})"
              if abs(gaps[-1][1]) <= spread else ""))
    if not changes:
        leader = a if gaps[0][1] > 0 else b
        return (f"{name[leader]} is ahead of {name[b if leader == a else a]} at every measured "
                f"epoch ({gap}): the order does not cross.")
    leader = a if gaps[-1][1] > 0 else b
    return (f"The order of {name[a]} and {name[b]} changes at epoch"
            f"{'s' * (len(changes) > 1)} {', '.join(map(str, changes))}; {name[leader]} is "
            f"ahead at the end ({gap}).")


def curve_runs(others, epochs):
    """The siblings' runs of `others` above `epochs` that measured the kNN during training."""
    return [r for r in others if r["variant"] in SIBLINGS and r["epochs"] > epochs
            and len(measured(r.get("history", {}))) > 1]


def long_budget(others, epochs):
    """The longest budget of the siblings' curves (`curve_runs`), or None."""
    return max((r["epochs"] for r in curve_runs(others, epochs)), default=None)


def sibling_curves_section(others, epochs, page):
    """The siblings' kNN curves at the longest budget of `others` above `epochs` whose runs
    measured the kNN during training: the mean over seeds at each epoch all of them measured,
    a plot beside `page`, and which way the order goes."""
    budget = long_budget(others, epochs)
    if budget is None:
        return []
    runs = [r for r in curve_runs(others, epochs) if r["epochs"] == budget]
    names = [n for n in SIBLINGS if any(r["variant"] == n for r in runs)]
    points = {n: {} for n in names}  # variant → epoch → [kNN of each seed]
    for r in runs:
        for e, v in measured(r["history"]):
            points[r["variant"]].setdefault(e, []).append(v)
    seeds = {n: sorted(r["seed"] for r in runs if r["variant"] == n) for n in names}
    common = sorted(set.intersection(*({e for e, v in points[n].items()
                                        if len(v) == len(seeds[n])} for n in names)))
    table = {n: {e: (float(np.mean(points[n][e])), (max(points[n][e]) - min(points[n][e])) / 2,
                     len(points[n][e])) for e in common} for n in names}
    picture = pathlib.Path(page).with_name(pathlib.Path(page).stem + "_siblings.png")
    sibling_curves(runs, table, picture)
    lines = [f"## The siblings over {budget} epochs", "",
             f"kNN top-1 measured during {budget}-epoch runs (the same recipe, the cosine "
             f"schedule over {budget} epochs), mean ± half the range over the seeds (" + "; ".join(
                 f"{n}: seed{'s' * (len(seeds[n]) > 1)} {', '.join(map(str, seeds[n]))}"
                 for n in names) + "):", "",
             "| epoch | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {e} | " + " | ".join(cell({n: table[n][e]}, n) for n in names) + " |"
              for e in common]
    lines += [""] + [line for other in names[1:] if "byol" in names
                     for line in (order_over_epochs("byol", other, table), "")]
    lines += [f"![kNN top-1 per epoch of the {budget}-epoch runs]({picture.name})", "",
              "The commands:", "", "```", *reproducing_commands(runs, "--only"), "```", ""]
    return lines


def write_page(rows, probes, page, others=(), command=None):
    """The page of `rows` (runs) and `probes` (their linear probes) of one budget; `others`
    are runs of the same dataset at other budgets; `command`: the one that writes the page."""
    knn, std = summary(rows, "knn_top1"), summary(rows, "projection_std")
    linear = summary(probes, "linear_top1")
    first = rows[0]
    lines = ["# Ablations on CIFAR-10: the papers' findings, measured", "",
             f"Every row is a full `train.py` run per seed: {first['dataset']}, encoder "
             f"`{first['encoder']}`, {first['epochs']} epochs, batch {first['batch_size']} "
             f"unless the row says otherwise, kNN top-1 (k = 200, cosine, T = 0.1) on the "
             f"{first['test_examples']:,} test images; mean ± half the range over the seeds (their number in brackets; one "
             "seed has no spread). "
             "`projection_std` is the collapse metric (≈ 1/√d spread out, → 0 collapsed). "
             f"{hosts_line(rows)} The commands that made the rows:", "", "```",
             *reproducing_commands(rows, "--only"), "```", "",
             *([f"This page is written from their results by `{command}`.", ""]
               if command else [])]
    if any(r["batch_size"] != first["batch_size"] for r in rows):
        lines += ["A row with a smaller batch keeps the epochs (more steps) and its learning "
                  "rate is the recipe's base × batch / 256, as at every batch.", ""]
    if "byol" in knn:
        lines += [f"BYOL's seed-to-seed spread at this budget: ± {knn['byol'][1]:.3f} (half the "
                  f"range of {knn['byol'][2]} seeds). A verdict compares the difference the claim "
                  "predicts with the sum of its rows' spreads, each at least BYOL's (one seed, "
                  "or two that happen to agree, say less of the noise): a smaller difference is "
                  "reported as within the spread, and a verdict that rests on a row of one seed "
                  "as provisional.", ""]
    if probes:
        lines += [f"Linear top-1: eval.py's linear protocol ({probes[0]['linear_epochs']} epochs "
                  "of SGD on the frozen encoder, crops and flips, the whole test split) on the "
                  "runs' encoders, for the baseline and the best and worst rows:", "", "```",
                  *reproducing_commands(probes, "--linear"), "```", ""]
    lines += budgets_section(rows, others)
    lines += sibling_curves_section(others, first["epochs"], page)
    for heading, names, claims in FINDINGS:
        lines += [f"## {heading}", ""]
        verdicts = [verdict(claim, names, knn) or "not yet measured" for claim in claims]
        for claim, ours in zip(claims, verdicts):
            lines += [f"Paper: {claim.text}", "", f"Ours: {ours}.", ""]
        if heading in NOTES and any(v.startswith(("disagrees", "within")) for v in verdicts):
            lines += [f"Found: {note(heading, rows, others)}", ""]
        lines += ["| variant | kNN top-1 (seeds) | linear top-1 (seeds) | projection_std |",
                  "|---|---|---|---|"]
        lines += [f"| {n} | {cell(knn, n)} | {linear_cell(linear, knn, n)} | "
                  f"{cell(std, n, '{:.4f}')} |" for n in names]
        lines.append("")
        if names == FIGURE_3A and any(n in knn for n in names):
            picture = pathlib.Path(page).with_name(pathlib.Path(page).stem + "_figure3a.png")
            micro_batch_plot(knn, picture)
            lines += [f"![kNN top-1 against the batch-norm micro-batch]({picture.name})", ""]
    curves = [r for r in rows if r.get("history", {}).get("knn_top1")]
    if curves:
        picture = pathlib.Path(page).with_suffix(".png")
        learning_curves(curves, picture)
        lines += ["## Learning curves", "", f"![kNN top-1 and projection_std per epoch]"
                  f"({picture.name})", ""]
    pathlib.Path(page).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(page).write_text("\n".join(lines))


def learning_curves(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        label = f"{r['variant']} (seed {r['seed']})"
        left.plot(*zip(*measured(r["history"])), marker="o", label=label)
        right.plot(range(1, len(r["history"]["projection_std"]) + 1),
                   r["history"]["projection_std"], marker="o", label=label)
    left.set(xlabel="epoch", ylabel="kNN top-1", title="kNN top-1 (test images)")
    right.set(xlabel="epoch", ylabel="projection_std", title="collapse metric", yscale="log")
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def micro_batch_plot(knn, path):
    """Figure 3a's rows as the paper draws them: kNN top-1 (mean, half the range as the error
    bar) against the batch each batch norm sees, BYOL beside SimCLR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6))
    for method, label in (("byol", "BYOL"), ("simclr", "SimCLR")):
        points = [(micro, knn[f"{method}_b512_micro{micro}"]) for micro in sorted(MICRO_BATCHES)
                  if f"{method}_b512_micro{micro}" in knn]
        if points:
            axis.errorbar([m for m, _ in points], [v[0] for _, v in points],
                          yerr=[v[1] for _, v in points], marker="o", capsize=3, label=label)
    axis.set_xscale("log", base=2)
    axis.set_xticks(sorted(MICRO_BATCHES), [str(m) for m in sorted(MICRO_BATCHES)])
    axis.set(xlabel="batch-norm micro-batch (optimizer batch 512)", ylabel="kNN top-1",
             title="Figure 3a at equal optimizer steps")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def sibling_curves(runs, table, path):
    """The siblings' mean kNN curves (`table`: {variant: {epoch: (mean, spread, seeds)}}),
    each seed's measurements as points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.8))
    for n, series in table.items():
        epochs = sorted(series)
        line, = axis.plot(epochs, [series[e][0] for e in epochs], label=SIBLING_NAMES[n])
        for r in (r for r in runs if r["variant"] == n):
            axis.plot(*zip(*measured(r["history"])), ".", color=line.get_color(), alpha=0.5)
    axis.set(xlabel="epoch", ylabel="kNN top-1", title="kNN top-1 (test images), mean of seeds")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv):
    if argv[1:] == ["run"]:
        run(FLAGS)
    elif argv[1:] == ["linear"]:
        linear(FLAGS)
    elif argv[1:] == ["table"] and FLAGS.page:
        runs = [r for r in recorded(FLAGS.out) if r["dataset"] == FLAGS.dataset]
        rows = [r for r in runs if r["epochs"] == FLAGS.epochs]  # the budget --epochs names
        probes = [r for r in recorded(linear_path(FLAGS.out))
                  if r["epochs"] == FLAGS.epochs and r["dataset"] == FLAGS.dataset]
        if not rows:
            raise app.UsageError(f"no runs of {FLAGS.epochs} epochs on {FLAGS.dataset} in {FLAGS.out}")
        write_page(rows, probes, FLAGS.page, [r for r in runs if r["epochs"] != FLAGS.epochs],
                   command=this_command())
    else:
        raise app.UsageError("usage: ablations.py run|linear|table --out=RESULTS.jsonl "
                             "[--page=PAGE.md]")


if __name__ == "__main__":
    app.run(main)
