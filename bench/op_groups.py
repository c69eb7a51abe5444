"""Op types of a traced step grouped alike for both libraries: matrix work, batch norm, layout
and copies, and the rest (elementwise chains, reductions, random draws, optimizer arithmetic).

Used by `profile_step.py` (TensorFlow's op types) and `peer_byol_pytorch.py --profile_steps`
(PyTorch's `aten::` ops, by self time); plain Python, importable in either environment.
"""

import re

PATTERNS = {  # library → ((group, op-type pattern), ...), the first that matches
    "tensorflow": (
        ("matrix", r"Conv|MatMul|Einsum|_FusedConv|Matmul"),
        ("batch norm", r"BatchNorm"),
        ("layout and copies", r"Transpose|Reorder|ToTf|Cast|Concat|Slice|Pack|Unpack|Split|"
                              r"Tile|Reshape|Identity|Gather|Pad"),
    ),
    "torch": (
        ("matrix", r"conv|::mm$|::addmm|::bmm|matmul|::linear$"),
        ("batch norm", r"batch_norm"),
        ("layout and copies", r"copy|::cat$|to_copy|contiguous|transpose|permute|clone|slice|"
                              r"reshape|::view|::empty|index|stack|expand"),
    ),
}
OTHER = "elementwise and other"


def group_of(op_type, library="tensorflow"):
    for group, pattern in PATTERNS[library]:
        if re.search(pattern, op_type):
            return group
    return OTHER


def summary(times, steps, wall_seconds, library, top=25):
    """(result, table) of `times` ({op type: (seconds, calls)} over `steps` traced steps that
    took `wall_seconds`): the step's wall and op milliseconds, each group's share of the op
    time, the `top` op types' milliseconds per step; the table lists those with their group,
    share and calls per step."""
    total = sum(seconds for seconds, _ in times.values())
    groups = {}
    for op_type, (seconds, _) in times.items():
        group = group_of(op_type, library)
        groups[group] = groups.get(group, 0.0) + seconds
    ranked = sorted(times.items(), key=lambda kv: -kv[1][0])[:top]
    table = [f"{'op type':<48} {'group':<22} {'ms/step':>9} {'share':>6} {'calls/step':>10}"]
    table += [f"{op_type[:48]:<48} {group_of(op_type, library):<22} "
              f"{1e3 * seconds / steps:9.2f} {seconds / total:6.1%} {count / steps:10.1f}"
              for op_type, (seconds, count) in ranked]
    result = dict(step_wall_ms=round(1e3 * wall_seconds / steps, 1),
                  op_ms_per_step=round(1e3 * total / steps, 1),
                  group_shares={g: round(s / total, 3)
                                for g, s in sorted(groups.items(), key=lambda kv: -kv[1])},
                  top_ops={k: round(1e3 * v[0] / steps, 2) for k, v in ranked})
    return result, "\n".join(table)
