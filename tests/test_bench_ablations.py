"""bench/ablations.py: every row of the grid is a train.py command that builds its switch, and
the page's verdicts and cells follow from the recorded runs (hand-computed here)."""

import json
import pathlib
import subprocess
import sys


ROOT = pathlib.Path(__file__).resolve().parents[1]

COMMANDS = """
import json, sys
sys.path.insert(0, "bench")
import ablations
from absl import flags
flags.FLAGS(["ablations.py", "--out=x.jsonl", "--dataset=cifar10", "--epochs=15",
             "--preset=cifar10_cpu_short", "--batch_size=128"])
print(json.dumps({n: [str(w) for w in ablations.train_command(flags.FLAGS, n, 3)[0]]
                  for n in ablations.GRID + ablations.FIGURE_3A}))
"""

BUILD = """
import json, sys
from absl import flags
import byol_tf.cli.train  # noqa: F401  (defines train.py's flags)
from byol_tf.training import build, config
out = {}
for name, command in json.loads(sys.stdin.read()).items():
    flags.FLAGS.unparse_flags()  # (the bundled sample stands in for CIFAR-10: same recipe)
    flags.FLAGS([w if not w.startswith(("--dataset=", "--data_dir=")) else "--dataset=sample"
                 for w in command])
    given = {f.name for f in flags.FLAGS.get_flags_for_module("byol_tf.cli.train") if f.present}
    resolved, _ = config.resolve(flags.FLAGS, given, config.Host())
    model = build.build_model(resolved, num_classes=10)
    out[name] = dict(batch_size=resolved.batch_size, method=resolved.method,
                     micro_batch_size=resolved.micro_batch_size,
                     accumulation=model.optimizer.gradient_accumulation_steps,
                     options=resolved.method_options, seed=resolved.seed,
                     model=type(model).__name__, encoder=resolved.encoder)
print(json.dumps(out))
"""


def python(code, stdin=None):
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, input=stdin, text=True,
                          capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_every_grid_row_is_a_train_command_that_builds_its_switch():
    commands = json.loads(python(COMMANDS))
    for name, command in commands.items():
        flag_names = [w.split("=")[0] for w in command[1:]]
        assert len(flag_names) == len(set(flag_names)), (name, command)  # one value per flag
    built = json.loads(python(BUILD, json.dumps(commands)))
    assert set(built) == set(commands)
    for name, row in built.items():
        assert row["seed"] == 3
        if "_b512_micro" in name:  # Figure 3a: one optimizer batch, micro-batches of the name
            micro = int(name.rsplit("micro", 1)[1])
            assert (row["batch_size"], row["micro_batch_size"]) == (512, micro), name
            assert row["accumulation"] == (512 // micro if micro < 512 else None), name
            continue
        assert row["batch_size"] == (32 if name.endswith("batch32") else 128), name
    assert built["no_predictor"]["options"]["use_predictor"] is False
    assert built["tau_0"]["options"]["tau_base"] == 0.0
    assert built["tau_1"]["options"]["tau_base"] == 1.0
    assert built["no_batch_norm"]["encoder"].endswith("_nonorm")
    assert built["no_batch_stats_gnws"]["encoder"].endswith("_gnws")
    for colourless in ("byol_crop_flip", "simclr_crop_flip"):
        for view in ("view1", "view2"):
            options = built[colourless]["options"][view]
            assert options["jitter_prob"] == options["grayscale_prob"] == 0.0
            assert options["blur_prob"] == options["solarize_prob"] == 0.0
    assert {built[n]["method"] for n in ("simclr", "moco_v2", "multiview")} == {
        "simclr", "moco", "multiview"}
    assert built["multiview_cl"]["options"]["lambda_fp"] == 0.0
    assert built["multiview_cl"]["options"]["lambda_ip"] == 0.0
    assert built["multiview_cl_fp"]["options"]["lambda_ip"] == 0.0
    assert "lambda_fp" not in built["multiview_cl_fp"]["options"]  # the method's default
    assert len({built[n]["model"] for n in ("byol", "simclr", "moco_v2", "multiview")}) == 4


XEON = dict(cpu="Intel Xeon", isa=["avx2", "amx_tile"])


def run_row(variant, seed, knn, std=0.07):
    return dict(variant=variant, seed=seed, dataset="cifar10", epochs=15, batch_size=128,
                encoder="tiny_resnet_cifar", test_examples=10000, knn_top1=knn,
                projection_std=std, history={}, cpu="cpu", cores=2, isa=["avx2"], steps=5850,
                driver="python bench/ablations.py run --epochs=15 --segment_minutes=9")


def page_of(tmp_path, runs):
    """The page `ablations.py table` writes (15 epochs) from `runs` (and the probes already
    in tmp_path's grid_linear.jsonl)."""
    out, page = tmp_path / "grid.jsonl", tmp_path / "page.md"
    out.write_text("".join(json.dumps(r) + "\n" for r in runs))
    done = subprocess.run([sys.executable, "bench/ablations.py", "table", "--dataset=cifar10",
                           "--epochs=15", f"--out={out}", f"--page={page}"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return page.read_text()


def test_the_page_states_means_spreads_verdicts_and_probes(tmp_path):
    runs = [run_row("byol", 0, 0.54), run_row("byol", 1, 0.52),
            run_row("no_predictor", 0, 0.28, 2e-4), run_row("no_predictor", 1, 0.30, 4e-4),
            run_row("tau_0", 0, 0.55) | XEON, run_row("tau_0", 1, 0.53) | XEON,
            run_row("byol", 0, 0.10) | dict(epochs=5)]  # another budget: only in its section
    probe = dict(dataset="cifar10", epochs=15, linear_epochs=30,
                 driver="python bench/ablations.py linear --linear=byol")
    (tmp_path / "grid_linear.jsonl").write_text("".join(json.dumps(r | probe) + "\n" for r in [
        dict(variant="byol", seed=0, linear_top1=0.61),
        dict(variant="byol", seed=1, linear_top1=0.57),
        dict(variant="tau_0", seed=0, linear_top1=0.50)]))
    text = page_of(tmp_path, runs)
    # byol 0.53 ± 0.01, no_predictor 0.29 ± 0.01: +0.24 beyond a spread of 0.02.
    assert "| byol | 0.530 ± 0.010 (2) | 0.590 ± 0.020 (2) |" in text
    assert "| no_predictor | 0.290 ± 0.010 (2) | — | 0.0003 ± 0.0001 (2) |" in text
    # a probe of other seeds than the kNN column's names them
    assert "| tau_0 | 0.540 ± 0.010 (2) | 0.500 (seed 0) |" in text
    assert "Ours: agrees (+0.240, spread 0.020)." in text
    # tau_0 0.54 ± 0.01: byol − tau_0 = −0.01, inside the spread 0.02: where the paper
    # reports a large effect, no effect is a disagreement.
    assert ("Ours: disagrees (-0.010, spread 0.020: no difference beyond the seeds' spread "
            "where the paper reports a large one).") in text
    assert ("Hosts (variant and seeds): Intel Xeon, 2 cores (avx2, amx_tile): tau_0 0/1; cpu, "
            "2 cores (avx2): byol 0/1, no_predictor 0/1.") in text
    # a finding that does not separate shows what was checked, as one that disagrees does
    assert "Found: The switch does what the paper describes: with τ = 0" in text
    assert "Ours: not yet measured." in text  # e.g. the smaller-batch rows
    verdicts_and_rows = [line for line in text.splitlines()
                         if line.startswith(("Ours:", "| ")) and not line.startswith("| 5 |")]
    assert not [line for line in verdicts_and_rows if "(1)" in line or "provisional" in line]
    assert "--segment_minutes" not in text and "30 epochs" in text
    assert ("python bench/ablations.py run --epochs=15 --seeds=0,1 "
            "--only=byol,no_predictor,tau_0") in text
    assert "python bench/ablations.py linear --seeds=0 --linear=byol,tau_0" in text
    assert "python bench/ablations.py linear --seeds=1 --linear=byol" in text


def test_other_budgets_show_the_variants_they_share_and_their_commands(tmp_path):
    other = dict(epochs=30, steps=11700,
                 driver="python bench/ablations.py run --epochs=30 --segment_minutes=9")
    pilot = dict(epochs=5, steps=1950, driver="python bench/ablations.py run --epochs=5")
    runs = [run_row("byol", 0, 0.54), run_row("byol", 1, 0.53), run_row("tau_0", 0, 0.52),
            run_row("simclr", 0, 0.59), run_row("simclr", 1, 0.58),
            run_row("byol", 0, 0.40) | pilot, run_row("byol", 1, 0.44) | pilot,
            run_row("byol", 0, 0.62) | other, run_row("byol", 1, 0.60) | other,
            run_row("simclr", 0, 0.63) | other]
    text = page_of(tmp_path, runs)
    section = text.split("## The budget")[1].split("\n## ")[0]
    # byol at 15: 0.535 ± 0.005; the 5-epoch pilot 0.42 ± 0.02; tau_0 ran at one budget only
    assert "BYOL's seeds spread by ± 0.005 there" in section
    assert "shorter pilots: ± 0.020 at 5 epochs (2 seeds)." in section
    assert "| epochs | steps | byol | simclr |" in section and "tau_0" not in section
    assert "| 5 | 1,950 | 0.420 ± 0.020 (2) | — |" in section
    assert "| 15 (this page) | 5,850 | 0.535 ± 0.005 (2) | 0.585 ± 0.005 (2) |" in section
    assert "| 30 | 11,700 | 0.610 ± 0.010 (2) | 0.630 (1) |" in section
    commands = section.split("```")[1].strip().splitlines()
    assert commands == ["python bench/ablations.py run --epochs=5 --seeds=0,1 --only=byol",
                        "python bench/ablations.py run --epochs=30 --seeds=0 --only=byol,simclr",
                        "python bench/ablations.py run --epochs=30 --seeds=1 --only=byol"]
    # the findings use the page's budget only
    assert "| simclr | 0.585 ± 0.005 (2) |" in text


def test_the_pages_commands_make_every_row_and_no_other():
    code = """
import json, pathlib, sys; sys.path.insert(0, "bench"); import ablations
home = str(pathlib.Path.home())
rows = [dict(variant=n, seed=0) for n in ablations.GRID] + [
    dict(variant="tau_0", seed=1), dict(variant="byol", seed=1), dict(variant="byol", seed=2),
    dict(variant="tau_0", seed=3), dict(variant="byol", seed=3)]
for r in rows:
    r["driver"] = (f"python bench/ablations.py run --work_dir={home}/grid --seeds={r['seed']} "
                   f"--only={r['variant']} --segment_minutes=30")
print(json.dumps(ablations.reproducing_commands(rows, "--only")))
"""
    # Seed 0 has the whole grid (no --only); seeds 1 and 3 share a pair, in the grid's order.
    assert json.loads(python(code)) == [
        "python bench/ablations.py run --work_dir=~/grid --seeds=0",
        "python bench/ablations.py run --work_dir=~/grid --seeds=1,3 --only=byol,tau_0",
        "python bench/ablations.py run --work_dir=~/grid --seeds=2 --only=byol"]


def test_a_row_of_one_seed_shows_no_spread_and_its_verdict_is_provisional(tmp_path):
    runs = [run_row("byol", 0, 0.54), run_row("byol", 1, 0.52), run_row("tau_1", 0, 0.45)]
    text = page_of(tmp_path, runs)
    assert "| tau_1 | 0.450 (1) | — | 0.0700 (1) |" in text
    # byol 0.53 ± 0.01 − tau_1 0.45 = +0.08; tau_1's own spread is unknown, so it counts
    # byol's: 0.01 + 0.01.
    assert "Ours: agrees (+0.080, spread 0.020; provisional: one seed of tau_1)." in text


def test_a_rows_spread_is_at_least_the_baselines():
    code = """
import sys; sys.path.insert(0, "bench"); import ablations
heading, names, (claim,) = next(f for f in ablations.FINDINGS if "multiview" in f[1])
rows = dict(multiview_cl=(0.600, 0.0005, 2), multiview_cl_fp=(0.601, 0.0, 1),
            multiview=(0.605, 0.0, 1))
print(ablations.verdict(claim, names, rows), end=" | ")
print(ablations.verdict(claim, names, rows | dict(byol=(0.54, 0.004, 3))), end=" | ")
print(ablations.verdict(claim, names, rows | dict(byol=(0.54, 0.001, 3))), end=" |")
"""
    # multiview − multiview_cl = +0.005. Without a baseline the rows' own spreads sum to
    # 0.0005; with byol's ± 0.004 each row counts 0.004 (0.008 > 0.005); with ± 0.001, 0.002.
    assert python(code) == (
        "agrees (+0.005, spread 0.001; provisional: one seed of multiview_cl_fp, multiview) | "
        "within the spread (+0.005, spread 0.008; provisional: one seed of multiview_cl_fp, "
        "multiview) | "
        "agrees (+0.005, spread 0.002; provisional: one seed of multiview_cl_fp, multiview) |")


def test_a_resumed_runs_wall_time_counts_every_training_segment():
    # metrics.json of a run trained in two processes (6690.7 s, then 821.1 s): its `train`
    # phase record times only the second (with its start-up); the row adds the first.
    metrics = dict(train_seconds=7511.7, segments=[dict(train_seconds=6690.7),
                                                   dict(train_seconds=821.1)],
                   phase_seconds=dict(train=825.7, save=0.4, evaluate=70.2, export=3.1))
    code = ("import json, sys; sys.path.insert(0, 'bench'); import ablations; "
            f"print(ablations.wall_seconds(json.loads('{json.dumps(metrics)}')))")
    assert float(python(code)) == round(6690.7 + 825.7 + 0.4 + 70.2 + 3.1, 1)


def test_a_row_keeps_each_term_of_a_summed_loss_and_drops_the_rest():
    # metrics.json's history of a multi-view run (two epochs, as train.py writes it)
    history = dict(loss=[5.4, 4.6], loss_cl=[3.8, 2.9], loss_fp=[261.5, 258.0],
                   loss_ip=[0.31, 0.45], projection_std=[0.051, 0.070],
                   learning_rate=[1e-3, 9e-4], probe_accuracy=[0.25, 0.31], probe_loss=[2.0, 1.9])
    code = ("import json, sys; sys.path.insert(0, 'bench'); import ablations; "
            f"print(json.dumps(ablations.kept_history(json.loads('{json.dumps(history)}'))))")
    kept = json.loads(python(code))
    assert kept == {k: history[k] for k in ("loss", "loss_cl", "loss_fp", "loss_ip",
                                            "projection_std")}


def test_a_claim_of_two_parts_gets_a_verdict_for_each_and_no_effect_disagrees_with_a_large_one():
    code = """
import sys; sys.path.insert(0, "bench"); import ablations
heading, names, claims = next(f for f in ablations.FINDINGS if "no_batch_stats_gnws" in f[1])
for gnws, none in ((0.52, 0.31), (0.39, 0.31), (0.32, 0.31)):
    knn = dict(byol=(0.53, 0.01, 2), no_batch_stats_gnws=(gnws, 0.01, 2),
               no_batch_norm=(none, 0.01, 2))
    print(" / ".join(ablations.verdict(c, names, knn) for c in claims), end=" | ")
"""
    # Part 1 (large): GN + WS − none, against the two rows' spreads 0.02: +0.21, +0.08, and
    # +0.01, no effect: a disagreement. Part 2 (close): baseline − GN + WS: 0.01 is within
    # 0.02 (agrees), 0.14 and 0.21 are not.
    no_effect = ": no difference beyond the seeds' spread where the paper reports a large one"
    assert python(code) == (
        "agrees (+0.210, spread 0.020) / agrees (+0.010, spread 0.020) | "
        "agrees (+0.080, spread 0.020) / disagrees (+0.140, spread 0.020) | "
        f"disagrees (+0.010, spread 0.020{no_effect}) / disagrees (+0.210, spread 0.020) |")


def test_every_number_a_claim_quotes_is_a_checked_quote():
    """Each percentage and epoch count in a "Paper:" line is one of QUOTES, which says where in
    the paper it is; a claim of two parts is two claims."""
    code = """
import json, re, sys; sys.path.insert(0, "bench"); import ablations
found = [(c.text, q) for _, _, claims in ablations.FINDINGS for c in claims
         for q in re.findall(r"\\d[\\d.]*(?: ± [\\d.]+)?%|\\d+ epochs", c.text)]
print(json.dumps([found, sorted(ablations.QUOTES)]))
"""
    found, quotes = json.loads(python(code))
    assert found and not [(text, q) for text, q in found if q not in quotes]
    assert {q for _, q in found} == set(quotes)  # and QUOTES lists nothing unused
    # the numbers the earlier page quoted wrongly are gone
    assert not [text for text, _ in found if "66.9" in text or "at 300 epochs)" in text]


def test_long_sibling_curves_show_the_means_per_epoch_and_where_the_order_crosses(tmp_path):
    def curve(values):  # kNN every 5 epochs of 20: None where not measured
        return dict(knn_top1=[v for m in values for v in (None, None, None, None, m)])

    long = dict(epochs=20, steps=7800,
                driver="python bench/ablations.py run --epochs=20 --curves=byol,simclr,moco_v2 "
                       "--curve_every=5 --segment_minutes=9")
    runs = [run_row("byol", 0, 0.54), run_row("byol", 1, 0.52), run_row("simclr", 0, 0.60),
            run_row("simclr", 1, 0.61), run_row("moco_v2", 0, 0.45),  # BYOL below SimCLR: a note
            run_row("byol", 0, 0.62) | long | dict(history=curve([0.40, 0.50, 0.60, 0.62])),
            run_row("byol", 1, 0.66) | long | dict(history=curve([0.42, 0.52, 0.64, 0.66])),
            run_row("simclr", 0, 0.60) | long | dict(history=curve([0.45, 0.55, 0.58, 0.60])),
            run_row("simclr", 1, 0.62) | long | dict(history=curve([0.47, 0.55, 0.60, 0.62])),
            run_row("moco_v2", 0, 0.50) | long | dict(history=curve([0.30, 0.40, 0.45, 0.50]))]
    text = page_of(tmp_path, runs)
    section = text.split("## The siblings over 20 epochs")[1].split("\n## ")[0]
    # the finding's note points to the longer runs instead of saying they were not measured
    siblings = text.split("## Contrastive siblings")[1].split("\n## ")[0]
    assert ("How the order goes over 20 epochs: [The siblings over 20 epochs]"
            "(#the-siblings-over-20-epochs).") in siblings
    assert "not measured here" not in siblings
    assert "byol: seeds 0, 1; simclr: seeds 0, 1; moco_v2: seed 0" in section
    assert "| 5 | 0.410 ± 0.010 (2) | 0.460 ± 0.010 (2) | 0.300 (1) |" in section
    assert "| 15 | 0.620 ± 0.020 (2) | 0.590 ± 0.010 (2) | 0.450 (1) |" in section
    assert "| 20 | 0.640 ± 0.020 (2) | 0.610 ± 0.010 (2) | 0.500 (1) |" in section
    # BYOL − SimCLR: −0.05, −0.03, +0.03, +0.03: ahead from epoch 15 on
    assert ("The order of BYOL and SimCLR changes at epoch 15; BYOL is ahead at the end "
            "(BYOL − SimCLR: -0.050 at epoch 5, +0.030 at epoch 20, inside the seeds' spread "
            "there (0.030)).") in section
    assert ("BYOL is ahead of MoCo v2 at every measured epoch (BYOL − MoCo v2: +0.110 at "
            "epoch 5, +0.140 at epoch 20): the order does not cross.") in section
    assert (tmp_path / "page_siblings.png").stat().st_size > 0
    assert ("python bench/ablations.py run --epochs=20 --curves=byol,simclr,moco_v2 "
            "--curve_every=5 --seeds=0 --only=byol,simclr,moco_v2") in section


def test_figure_3a_rows_get_their_verdict_and_plot(tmp_path):
    big = dict(batch_size=512, steps=1455)
    knn = {("byol", 512): (0.50, 0.52), ("byol", 128): (0.50, 0.50), ("byol", 64): (0.49, 0.49),
           ("byol", 32): (0.47, 0.49), ("simclr", 512): (0.58, 0.60),
           ("simclr", 128): (0.56, 0.56), ("simclr", 64): (0.54, 0.54),
           ("simclr", 32): (0.50, 0.52)}
    runs = [run_row("byol", 0, 0.54), run_row("byol", 1, 0.52)] + [
        run_row(f"{method}_b512_micro{micro}", seed, value) | big
        for (method, micro), values in knn.items() for seed, value in enumerate(values)]
    text = page_of(tmp_path, runs)
    section = text.split("## Smaller batches at equal optimizer steps")[1].split("\n## ")[0]
    # SimCLR loses 0.59 − 0.51 = 0.08, BYOL 0.51 − 0.48 = 0.03: +0.05 against spreads of
    # 4 × 0.01 = 0.04
    assert "Ours: agrees (+0.050, spread 0.040)." in section
    assert "| byol_b512_micro64 | 0.490 ± 0.000 (2) | — |" in section
    assert "![kNN top-1 against the batch-norm micro-batch](page_figure3a.png)" in section
    assert (tmp_path / "page_figure3a.png").stat().st_size > 0
