"""Self-supervised losses as small pure functions of `keras.ops` (any backend).

Shapes: B samples per replica, P projection dims. Every loss returns a scalar averaged over
the local batch; under a multi-replica strategy the caller divides by the replica count
(the gradients are summed), and the `*_all` arguments hold the keys of every replica
(`byol_tf.distribute.gather_replicas`), local replica first at `offset`.
"""

from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))


def cosine_matrix(a, b):
    """`[B, P], [N, P] → [B, N]` cosine similarities."""
    return ops.matmul(l2_normalize(a), ops.transpose(l2_normalize(b)))


def regression_loss(prediction, target):
    """BYOL: `2 − 2·cos(prediction, target)` per sample: `[B, P], [B, P] → [B]`."""
    return 2.0 - 2.0 * ops.sum(l2_normalize(prediction) * l2_normalize(target), axis=-1)


def beta_infonce(prediction1, prediction2, target1, target2, beta=0.0, alpha=0.1,
                 target1_all=None, target2_all=None, offset=0):
    """The BYOL paper's InfoNCE^{α,β} (§5, "relationship with contrastive methods"), as a loss,
    symmetrised over the two views:

        S(u, u') = ⟨φ(u), ψ(u')⟩ / (‖φ(u)‖·‖ψ(u')‖),  φ = online prediction, ψ = target projection
        InfoNCE^{α,β} = 2/B Σ_i S(v_i, v'_i)
                        − β·2α/B Σ_i ln( Σ_{j≠i} exp(S(v_i, v_j)/α) + Σ_j exp(S(v_i, v'_j)/α) )
        loss = Σ over (v, v') ∈ {(view1, view2), (view2, view1)} of [2 − InfoNCE^{α,β}]

    β = 0 is BYOL's loss exactly (2 − 2·cos per direction); β = 1 with φ = ψ = the online
    projection is SimCLR's. Negatives j range over the keys of every replica when given.
    """
    loss = 0.0
    for p, same, other, same_all, other_all in (
            (prediction1, target1, target2, target1_all, target2_all),
            (prediction2, target2, target1, target2_all, target1_all)):
        direction = regression_loss(p, other)  # 2 − 2·S(v_i, v'_i)
        if beta:
            same_keys = same if same_all is None else same_all
            other_keys = other if other_all is None else other_all
            s_same = cosine_matrix(p, same_keys) / alpha  # [B, N]: S(v_i, v_j)/α
            s_other = cosine_matrix(p, other_keys) / alpha  # [B, N]: S(v_i, v'_j)/α
            rows = ops.arange(ops.shape(p)[0], dtype="int32") + ops.cast(offset, "int32")
            own = ops.one_hot(rows, ops.shape(same_keys)[0], dtype=s_same.dtype)
            s_same = s_same - 1e9 * own  # j ≠ i
            log_sum = ops.logsumexp(ops.concatenate([s_same, s_other], axis=1), axis=1)
            direction = direction + beta * 2.0 * alpha * log_sum
        loss = loss + ops.mean(direction)
    return loss


def nt_xent(z1, z2, temperature=0.1, z1_all=None, z2_all=None, offset=0):
    """SimCLR's NT-Xent: each of the 2B local views is an anchor; its positive is the other
    view of its image, its negatives the other 2N − 2 views (N = global batch); cross-entropy
    over cosine similarities / temperature, averaged over the local anchors."""
    z1_all = z1 if z1_all is None else z1_all
    z2_all = z2 if z2_all is None else z2_all
    n = ops.shape(z1_all)[0]
    keys = ops.concatenate([z1_all, z2_all], axis=0)  # [2N, P]
    anchors = ops.concatenate([z1, z2], axis=0)  # [2B, P]
    b = ops.shape(z1)[0]
    index = ops.arange(b, dtype="int32") + ops.cast(offset, "int32")
    own = ops.concatenate([index, index + n], axis=0)  # the anchor itself among the keys
    positive = ops.concatenate([index + n, index], axis=0)
    logits = cosine_matrix(anchors, keys) / temperature
    logits = logits - 1e9 * ops.one_hot(own, 2 * n, dtype=logits.dtype)
    log_prob = logits - ops.logsumexp(logits, axis=1, keepdims=True)
    return -ops.mean(ops.sum(log_prob * ops.one_hot(positive, 2 * n, dtype=logits.dtype), axis=1))


def moco_infonce(query, key, queue, temperature=0.2):
    """MoCo: `-log exp(q·k⁺/T) / (exp(q·k⁺/T) + Σ_m exp(q·queue_m/T))` with l2-normalised
    q `[B, P]`, k⁺ `[B, P]` (the momentum encoder's key of the same image) and the queue
    `[K, P]` of earlier keys; mean over B."""
    q, k = l2_normalize(query), l2_normalize(key)
    positive = ops.sum(q * k, axis=-1, keepdims=True)  # [B, 1]
    negative = ops.matmul(q, ops.transpose(l2_normalize(queue)))  # [B, K]
    logits = ops.concatenate([positive, negative], axis=1) / temperature
    return ops.mean(ops.logsumexp(logits, axis=1) - logits[:, 0])


def infonce(z1, z2, temperature=0.1, z2_all=None, offset=0):
    """One-directional InfoNCE between paired representations: `-log softmax_j(cos(z1_i,
    z2_j)/T)[i]`, mean over the local i; j over every replica's z2 when `z2_all` is given
    (Tsai et al.'s L_CL with the batch as negatives)."""
    keys = z2 if z2_all is None else z2_all
    logits = cosine_matrix(z1, keys) / temperature
    rows = ops.arange(ops.shape(z1)[0], dtype="int32") + ops.cast(offset, "int32")
    positive = ops.sum(logits * ops.one_hot(rows, ops.shape(keys)[0], dtype=logits.dtype), axis=1)
    return ops.mean(ops.logsumexp(logits, axis=1) - positive)


def forward_predictive(reconstruction, target):
    """Tsai et al.'s L_FP: mean squared error of the other view reconstructed from a
    representation, `[B, ...] → scalar` (mean over samples of the per-sample sum)."""
    diff = ops.reshape(reconstruction - target, (ops.shape(target)[0], -1))
    return ops.mean(ops.sum(ops.square(diff), axis=1))


def inverse_predictive(z1, z2):
    """Tsai et al.'s L_IP: `‖z_x − z_s‖²`, mean over samples."""
    return ops.mean(ops.sum(ops.square(z1 - z2), axis=-1))

