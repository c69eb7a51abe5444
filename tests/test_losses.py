"""Every self-supervised loss against an independent float64 numpy computation written from
the papers' formulas with explicit loops, on fixed random inputs."""

import numpy as np
import pytest

from byol_tf import losses

RNG = np.random.default_rng(0)
B, P = 6, 5


def _x(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _np(x):
    return float(np.asarray(x))


@pytest.mark.parametrize("beta,alpha", [(0.0, 0.1), (0.5, 0.1), (1.0, 0.3)])
def test_beta_infonce_matches_the_papers_formula(beta, alpha):
    q1, q2, t1, t2 = (_x(B, P).astype(np.float64) for _ in range(4))
    expected = 0.0
    for p, same, other in ((q1, t1, t2), (q2, t2, t1)):  # (v, v') and (v', v)
        info = 2.0 / B * sum(_cos(p[i], other[i]) for i in range(B))
        if beta:
            info -= beta * 2 * alpha / B * sum(
                np.log(sum(np.exp(_cos(p[i], same[j]) / alpha) for j in range(B) if j != i)
                       + sum(np.exp(_cos(p[i], other[j]) / alpha) for j in range(B)))
                for i in range(B))
        expected += 2.0 - info
    got = losses.beta_infonce(*(a.astype(np.float32) for a in (q1, q2, t1, t2)), beta=beta,
                              alpha=alpha)
    np.testing.assert_allclose(_np(got), expected, rtol=1e-5)


def test_beta_zero_is_the_byol_loss():
    q1, q2, t1, t2 = (_x(B, P) for _ in range(4))
    byol = np.mean(losses.regression_loss(q1, t2)) + np.mean(losses.regression_loss(q2, t1))
    np.testing.assert_allclose(_np(losses.beta_infonce(q1, q2, t1, t2, beta=0.0)), byol, rtol=1e-6)


def test_nt_xent_matches_simclr():
    z1, z2 = _x(B, P).astype(np.float64), _x(B, P).astype(np.float64)
    t = 0.5
    views = np.concatenate([z1, z2])  # 2B views; k and k+B are one image
    total = 0.0
    for a in range(2 * B):
        positive = (a + B) % (2 * B)
        denominator = sum(np.exp(_cos(views[a], views[k]) / t) for k in range(2 * B) if k != a)
        total += -np.log(np.exp(_cos(views[a], views[positive]) / t) / denominator)
    got = losses.nt_xent(z1.astype(np.float32), z2.astype(np.float32), temperature=t)
    np.testing.assert_allclose(_np(got), total / (2 * B), rtol=1e-5)


def test_nt_xent_with_gathered_keys_equals_the_global_loss():
    """Two replicas' halves, each against all keys, average to the single-device loss."""
    z1, z2 = _x(2 * B, P), _x(2 * B, P)
    whole = _np(losses.nt_xent(z1, z2, 0.2))
    halves = [_np(losses.nt_xent(z1[r * B:(r + 1) * B], z2[r * B:(r + 1) * B], 0.2,
                                 z1_all=z1, z2_all=z2, offset=r * B)) for r in (0, 1)]
    np.testing.assert_allclose(np.mean(halves), whole, rtol=1e-5)


def test_moco_infonce_matches_its_definition():
    q, k, queue = _x(B, P).astype(np.float64), _x(B, P).astype(np.float64), _x(9, P).astype(np.float64)
    t = 0.2
    total = 0.0
    for i in range(B):
        pos = np.exp(_cos(q[i], k[i]) / t)
        neg = sum(np.exp(_cos(q[i], queue[m]) / t) for m in range(len(queue)))
        total += -np.log(pos / (pos + neg))
    got = losses.moco_infonce(q.astype(np.float32), k.astype(np.float32),
                              queue.astype(np.float32), temperature=t)
    np.testing.assert_allclose(_np(got), total / B, rtol=1e-5)


def test_multiview_losses():
    z1, z2 = _x(B, P).astype(np.float64), _x(B, P).astype(np.float64)
    t = 0.1
    l_cl = np.mean([-np.log(np.exp(_cos(z1[i], z2[i]) / t) /
                            sum(np.exp(_cos(z1[i], z2[j]) / t) for j in range(B))) for i in range(B)])
    np.testing.assert_allclose(_np(losses.infonce(z1.astype(np.float32), z2.astype(np.float32), t)),
                               l_cl, rtol=1e-5)
    l_ip = np.mean([sum((z1[i, d] - z2[i, d]) ** 2 for d in range(P)) for i in range(B)])
    np.testing.assert_allclose(_np(losses.inverse_predictive(z1.astype(np.float32),
                                                             z2.astype(np.float32))), l_ip, rtol=1e-5)
    recon, target = _x(B, 4, 4, 3).astype(np.float64), _x(B, 4, 4, 3).astype(np.float64)
    l_fp = np.mean([np.sum((recon[i] - target[i]) ** 2) for i in range(B)])
    np.testing.assert_allclose(_np(losses.forward_predictive(recon.astype(np.float32),
                                                             target.astype(np.float32))), l_fp, rtol=1e-5)


def test_infonce_with_gathered_keys_equals_the_global_loss():
    z1, z2 = _x(2 * B, P), _x(2 * B, P)
    whole = _np(losses.infonce(z1, z2, 0.2))
    halves = [_np(losses.infonce(z1[r * B:(r + 1) * B], z2[r * B:(r + 1) * B], 0.2, z2_all=z2,
                                 offset=r * B)) for r in (0, 1)]
    np.testing.assert_allclose(np.mean(halves), whole, rtol=1e-5)
