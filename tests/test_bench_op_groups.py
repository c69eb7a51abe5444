"""bench/op_groups.py: both libraries' op types land in the same groups, and a profile's
shares and per-step times are its op times summed by group (hand-computed here)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))
import op_groups  # noqa: E402

SAME_WORK = [  # (TensorFlow op type, PyTorch op, group)
    ("_MklNativeConv2D", "aten::mkldnn_convolution", "matrix"),
    ("_MklNativeConv2DBackpropFilter", "aten::convolution_backward", "matrix"),
    ("_MklMatMul", "aten::addmm", "matrix"),
    ("_MklMatMul", "aten::mm", "matrix"),
    ("_MklNativeFusedBatchNormGradV3", "aten::native_batch_norm_backward", "batch norm"),
    ("Relu", "aten::clamp_min", "elementwise and other"),
    ("ReluGrad", "aten::threshold_backward", "elementwise and other"),
    ("Cast", "aten::_to_copy", "layout and copies"),
    ("ConcatV2", "aten::cat", "layout and copies"),
    ("Mul", "aten::mul", "elementwise and other"),
]


def test_the_same_work_is_in_the_same_group_in_both_libraries():
    for tf_op, torch_op, group in SAME_WORK:
        assert op_groups.group_of(tf_op, "tensorflow") == group, tf_op
        assert op_groups.group_of(torch_op, "torch") == group, torch_op
    # a resize is not a matmul, though its name holds "linear"
    assert op_groups.group_of("aten::_upsample_bilinear2d_aa", "torch") != "matrix"


def test_a_profiles_shares_and_times_per_step_are_its_op_times_summed_by_group():
    times = {"_MklNativeConv2D": (0.6, 40), "_MklMatMul": (0.2, 10),
             "_MklNativeFusedBatchNormV3": (0.1, 20), "Mul": (0.08, 500), "Cast": (0.02, 30)}
    result, table = op_groups.summary(times, steps=4, wall_seconds=0.8, library="tensorflow",
                                      top=2)
    assert result["step_wall_ms"] == 200.0 and result["op_ms_per_step"] == 250.0
    assert result["group_shares"] == {"matrix": 0.8, "batch norm": 0.1,
                                      "elementwise and other": 0.08, "layout and copies": 0.02}
    assert list(result["group_shares"]) == ["matrix", "batch norm", "elementwise and other",
                                            "layout and copies"]  # largest first
    assert result["top_ops"] == {"_MklNativeConv2D": 150.0, "_MklMatMul": 50.0}
    rows = table.splitlines()[1:]
    assert len(rows) == 2 and rows[0].split()[:2] == ["_MklNativeConv2D", "matrix"]
    assert rows[0].split()[-3:] == ["150.00", "60.0%", "10.0"]  # ms/step, share, calls/step
