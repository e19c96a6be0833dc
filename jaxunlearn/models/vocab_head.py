"""The LM head by vocabulary blocks: per-token softmax statistics without [B, T, V] logits.

A `VocabHead` is what the head would multiply (final-normed hidden states, the head
matrix, its bias and soft-cap). `log_partition` scans the vocabulary in blocks of `chunk`
columns with an online logsumexp (what NLL and log p(target) need), optionally at the
needed tokens only; `softmax_stats` returns, per token, the log-partition lse, the mean
logit and the softmax-expected logit E_p[z] (ME in both directions and entropy);
`teacher_expectation` returns E_q[z_student] under a teacher's softmax, with the
student's logsumexp and the teacher's entropy from the same pass (KL and UNDIAL). Their
backward passes are blockwise too (custom VJPs that recompute each block's logits), so
neither direction holds more than [B*T, chunk] fp32 logits at once: for Llama-3
(vocabulary 128,256) at 8 x 512 tokens that is 0.25 GiB instead of 2 GiB per stream, and
the same again for the gradient.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from ..parallel import batch_mesh_ways, constrain_batch


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """The static shape of a blockwise head: weight [D, V] (vocab_axis 1) or the tied
    embedding [V, D] (vocab_axis 0), cut into `blocks` blocks of `chunk` columns (the last
    padded when `chunk` does not divide V)."""

    vocab_size: int
    vocab_axis: int
    softcap: float
    chunk: int

    @property
    def blocks(self) -> int:
        return -(-self.vocab_size // self.chunk)


def block_size(vocab_size: int, target: int) -> int:
    """A block width near `target` that divides the vocabulary when one is close (no padded
    copy of the head): 49,152 -> 16,384; 128,256 -> 16,032; else `target`, padded."""
    if vocab_size <= target:
        return vocab_size
    n = -(-vocab_size // target)
    for blocks in range(n, 2 * n + 1):
        if vocab_size % blocks == 0:
            return vocab_size // blocks
    return target


@flax.struct.dataclass
class VocabHead:
    """hidden [B, T, D] (compute dtype) and the head that maps it to V logits."""

    hidden: jax.Array
    weight: jax.Array  # [D, V], or [V, D] when vocab_axis == 0 (tied embeddings)
    bias: jax.Array | None
    spec: HeadSpec = flax.struct.field(pytree_node=False)

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    def logits(self) -> jax.Array:
        """All fp32 logits [B, T, V] at once (for terms that need the whole distribution)."""
        b, t, d = self.hidden.shape
        z = _logits(self.spec, self.hidden.reshape(b * t, d), self.weight, self.bias)
        return z.reshape(b, t, -1)

    def target_logits(self, targets: jax.Array) -> jax.Array:
        """z[target] [B, T] for integer targets [B, T]: one gathered column per token."""
        cols = jnp.take(self.weight, targets, axis=self.spec.vocab_axis)  # [D, B, T] or [B, T, D]
        if self.spec.vocab_axis == 1:
            z = jnp.einsum("btd,dbt->bt", self.hidden, cols, preferred_element_type=jnp.float32)
        else:
            z = jnp.einsum("btd,btd->bt", self.hidden, cols, preferred_element_type=jnp.float32)
        if self.bias is not None:
            z = z + jnp.take(self.bias, targets).astype(jnp.float32)
        return _cap(self.spec, z)


def _cap(spec: HeadSpec, z):
    return jnp.tanh(z / spec.softcap) * spec.softcap if spec.softcap else z


def _logits(spec: HeadSpec, h, w, b):
    """fp32 logits [N, V'] of rows h [N, D] against a weight block (V' columns)."""
    eq = "nd,dv->nv" if spec.vocab_axis == 1 else "nd,vd->nv"
    z = jnp.einsum(eq, h, w, preferred_element_type=jnp.float32)
    if b is not None:
        z = z + b.astype(jnp.float32)
    return _cap(spec, z)


def _padded(spec: HeadSpec, w, b):
    extra = spec.blocks * spec.chunk - spec.vocab_size
    if not extra:
        return w, b
    pad = [(0, 0), (0, 0)]
    pad[spec.vocab_axis] = (0, extra)
    return jnp.pad(w, pad), (None if b is None else jnp.pad(b, (0, extra)))


def _block(spec: HeadSpec, w, b, i):
    """Block i's weight and bias, and its valid columns (None when the blocks tile the
    vocabulary exactly: no mask to apply, no elementwise select per logit)."""
    start = i * spec.chunk
    w_i = jax.lax.dynamic_slice_in_dim(w, start, spec.chunk, axis=spec.vocab_axis)
    b_i = None if b is None else jax.lax.dynamic_slice_in_dim(b, start, spec.chunk)
    if spec.blocks * spec.chunk == spec.vocab_size:
        return w_i, b_i, None
    return w_i, b_i, start + jnp.arange(spec.chunk) < spec.vocab_size


def _where(valid, x, fill):
    return x if valid is None else jnp.where(valid, x, fill)


def _flat(h):
    return h.reshape(-1, h.shape[-1])


# ---- the log-partition alone (NLL, log p(target)), at the rows that need it -------------------

# The log-partition's row compaction cuts each part of the batch into about ROW_CHUNKS
# chunks of at least MIN_ROW_CHUNK rows: coarse enough that the chunks' loop costs little
# on an accelerator, fine enough that skipping whole chunks skips most unneeded rows.
ROW_CHUNKS = 8
MIN_ROW_CHUNK = 128


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _log_partition(spec: HeadSpec, h, w, b):
    return _log_partition_fwd(spec, h, w, b)[0]


def _log_partition_fwd(spec, h, w, b):
    wp, bp = _padded(spec, w, b)
    n = h.shape[0]

    def body(carry, i):
        w_i, b_i, valid = _block(spec, wp, bp, i)
        m, s, _ = _online_step((*carry, ()), _logits(spec, h, w_i, b_i), (), valid)
        return (m, s), None

    (m, s), _ = jax.lax.scan(body, (jnp.full((n,), -jnp.inf), jnp.zeros((n,), jnp.float32)), jnp.arange(spec.blocks))
    lse = m + jnp.log(s)
    return lse, (h, w, b, lse)


def _log_partition_bwd(spec, res, g):
    h, w, b, lse = res
    return _backward_blocks(spec, h, w, b, lambda i, z, valid: g[:, None] * jnp.exp(z - lse[:, None]))


_log_partition.defvjp(_log_partition_fwd, _log_partition_bwd)


def log_partition(head: VocabHead, where: jax.Array | None = None) -> jax.Array:
    """logsumexp of each token's logits, fp32 [B, T]; differentiable blockwise. It is what
    log p(target) needs, without softmax_stats' two other sums (forward) and their terms in
    the gradient (backward): elementwise work over every logit that NLL never uses.

    where [B, T] bool: only those tokens' values are needed (0 elsewhere). Their rows are
    moved to the front (within each part of the batch the mesh splits off, so no row crosses
    devices) and the head runs on chunks of rows, skipping every chunk past the last needed
    row: prompts and padding (42% of the tokens of the benchmark's batches) cost no head matmuls."""
    bt = head.hidden.shape[:2]
    h = head.hidden
    if where is None:
        return _log_partition(head.spec, _flat(h), head.weight, head.bias).reshape(bt)
    parts = batch_mesh_ways(bt[0])
    rows = bt[0] * bt[1] // parts
    chunk = min(max(MIN_ROW_CHUNK, -(-rows // ROW_CHUNKS)), rows)
    padded = -(-rows // chunk) * chunk
    h = constrain_batch(h.reshape(parts, rows, h.shape[-1]))
    keep = constrain_batch(where.reshape(parts, rows))
    order = jnp.argsort(~keep, axis=1, stable=True)  # needed rows first, in order
    hs = jnp.take_along_axis(h, order[..., None], axis=1)
    hs = jnp.pad(hs, ((0, 0), (0, padded - rows), (0, 0)))
    needed = keep.sum(1).max()
    chunks = jnp.moveaxis(hs.reshape(parts, padded // chunk, chunk, -1), 1, 0)  # [K, parts, chunk, D]
    lse = _rows_log_partition(head.spec, chunks, head.weight, head.bias, (needed - 1) // chunk)
    lse = jnp.moveaxis(lse, 0, 1).reshape(parts, padded)[:, :rows]
    lse = jnp.take_along_axis(lse, jnp.argsort(order, axis=1), axis=1)  # back to token order
    return jnp.where(keep, lse, 0.0).reshape(bt)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _rows_log_partition(spec: HeadSpec, chunks, w, b, last):
    """lse of chunks [K, parts, C, D] of rows, [K, parts, C]; chunks past `last` are zeros
    (their rows are not needed), forward and backward. A custom VJP, not autodiff of the
    scan and its cond, which would keep a copy of the head weight per chunk."""
    return _rows_fwd(spec, chunks, w, b, last)[0]


def _rows_fwd(spec, chunks, w, b, last):
    def one(_, xs):
        k, h = xs
        lse = jax.lax.cond(
            k <= last,
            lambda x: _log_partition_fwd(spec, _flat(x), w, b)[0].reshape(x.shape[:2]),
            lambda x: jnp.zeros(x.shape[:2], jnp.float32),
            h,
        )
        return None, lse

    _, lse = jax.lax.scan(one, None, (jnp.arange(chunks.shape[0]), chunks))
    return lse, (chunks, w, b, last, lse)


def _rows_bwd(spec, res, g):
    chunks, w, b, last, lse = res
    wp, bp = _padded(spec, w, b)

    def one(carry, xs):
        k, h, lse_k, g_k = xs

        def needed(operands):
            dw, db = operands
            rows = _flat(h)
            lse_r, g_r = lse_k.reshape(-1), g_k.reshape(-1)
            dh, dw, db = _accumulate_blocks(
                spec, rows, wp, bp, lambda i, z, valid: g_r[:, None] * jnp.exp(z - lse_r[:, None]), dw, db
            )
            return dh.reshape(h.shape), (dw, db)

        dh, carry = jax.lax.cond(k <= last, needed, lambda ops: (jnp.zeros_like(h), ops), carry)
        return carry, dh

    # fp32 sums over the chunks (a bf16 head would round at every chunk's addition)
    init = (jnp.zeros(wp.shape, jnp.float32), None if bp is None else jnp.zeros(bp.shape, jnp.float32))
    (dw, db), dh = jax.lax.scan(one, init, (jnp.arange(chunks.shape[0]), chunks, lse, g))
    dw, db = _unpadded(spec, dw, db)
    return dh, dw.astype(w.dtype), (None if db is None else db.astype(b.dtype)), None


_rows_log_partition.defvjp(_rows_fwd, _rows_bwd)


# ---- softmax statistics of one head: lse, mean logit, E_p[z] ---------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _self_stats(spec: HeadSpec, h, w, b):
    return _self_stats_fwd(spec, h, w, b)[0]


def _online_step(carry, z, ys, valid):
    """Fold one block into the running (max, sum of e, (sum of e * y for y in ys)) with
    e = exp(z - max)."""
    m, s, accs = carry
    m_new = jnp.maximum(m, jnp.max(_where(valid, z, -jnp.inf), axis=-1))
    scale = jnp.exp(m - m_new)
    e = _where(valid, jnp.exp(z - m_new[:, None]), 0.0)
    accs = tuple(a * scale + (e * _where(valid, y, 0.0)).sum(-1) for a, y in zip(accs, ys))
    return m_new, s * scale + e.sum(-1), accs


def _self_stats_fwd(spec, h, w, b):
    wp, bp = _padded(spec, w, b)
    n = h.shape[0]

    def body(carry, i):
        stats, total = carry
        w_i, b_i, valid = _block(spec, wp, bp, i)
        z = _logits(spec, h, w_i, b_i)
        return (_online_step(stats, z, (z,), valid), total + _where(valid, z, 0.0).sum(-1)), None

    zero = jnp.zeros((n,), jnp.float32)
    start = ((jnp.full((n,), -jnp.inf), zero, (zero,)), zero)
    ((m, s, (a,)), total), _ = jax.lax.scan(body, start, jnp.arange(spec.blocks))
    lse, expected = m + jnp.log(s), a / s
    out = (lse, total / spec.vocab_size, expected)
    return out, (h, w, b, lse, expected)


def _backward_blocks(spec, h, w, b, dz_of):
    """Cotangents of (h, w, b) from dz_of(i, z_i, valid) -> d loss / d z_i, block by block."""
    wp, bp = _padded(spec, w, b)
    dh, dw, db = _accumulate_blocks(
        spec, h, wp, bp, dz_of, jnp.zeros_like(wp), None if bp is None else jnp.zeros_like(bp), add=False
    )
    return dh, *_unpadded(spec, dw, db)


def _accumulate_blocks(spec, h, wp, bp, dz_of, dw, db, add: bool = True):
    """(dh of rows h, dw + their weight cotangent, db + their bias cotangent), with the
    weight, bias and their cotangents padded to whole blocks. add=False: dw and db are
    zeros, and each block's cotangent is written, not added (no read of the zeros)."""

    def put(acc, x, start, axis):
        x = x.astype(acc.dtype)
        if add:
            x = x + jax.lax.dynamic_slice_in_dim(acc, start, spec.chunk, axis=axis)
        return jax.lax.dynamic_update_slice_in_dim(acc, x, start, axis=axis)

    def body(carry, i):
        dh, dw, db = carry
        w_i, b_i, valid = _block(spec, wp, bp, i)
        z, vjp = jax.vjp(lambda h_, w_, b_: _logits(spec, h_, w_, b_), h, w_i, b_i)
        dh_i, dw_i, db_i = vjp(_where(valid, dz_of(i, z, valid), 0.0))
        dw = put(dw, dw_i, i * spec.chunk, spec.vocab_axis)
        db = None if db is None else put(db, db_i, i * spec.chunk, 0)
        return (dh + dh_i.astype(jnp.float32), dw, db), None

    init = (jnp.zeros(h.shape, jnp.float32), dw, db)
    (dh, dw, db), _ = jax.lax.scan(body, init, jnp.arange(spec.blocks))
    return dh.astype(h.dtype), dw, db


def _unpadded(spec, dw, db):
    dw = jax.lax.slice_in_dim(dw, 0, spec.vocab_size, axis=spec.vocab_axis)
    return dw, (None if db is None else db[: spec.vocab_size])


def _self_stats_bwd(spec, res, g):
    h, w, b, lse, expected = res
    g_lse, g_mean, g_exp = g

    def dz_of(i, z, valid):
        p = jnp.exp(z - lse[:, None])
        # d lse = p; d mean = 1/V; d E_p[z] = p (1 + z - E_p[z])
        return g_lse[:, None] * p + g_mean[:, None] / spec.vocab_size + g_exp[:, None] * p * (1 + z - expected[:, None])

    return _backward_blocks(spec, h, w, b, dz_of)


_self_stats.defvjp(_self_stats_fwd, _self_stats_bwd)


def softmax_stats(head: VocabHead):
    """(lse, mean logit, E_p[z]) per token, each fp32 [B, T]; differentiable blockwise.
    log p(v) = z_v - lse; entropy = lse - E_p[z]; KL(U || p) = lse - mean - log V."""
    bt = head.hidden.shape[:2]
    stats = _self_stats(head.spec, _flat(head.hidden), head.weight, head.bias)
    return tuple(x.reshape(bt) for x in stats)


# ---- a student's logits under a (stopped) teacher's softmax -----------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _teacher_expectation(spec_t, spec_s, beta, teacher, student, targets):
    return _teacher_fwd(spec_t, spec_s, beta, teacher, student, targets)[0]


def _teacher_logits(spec_t, beta, z, i, targets):
    if not beta:
        return z
    cols = i * spec_t.chunk + jnp.arange(spec_t.chunk)
    return z - beta * (cols[None, :] == targets[:, None])


def _teacher_fwd(spec_t, spec_s, beta, teacher, student, targets):
    """One pass over the blocks: the teacher's running softmax weighs the student's logits
    and its own; the student's logsumexp rides along, so KL and UNDIAL read each block's
    logits once."""
    (ht, wt, bt), (hs, ws, bs) = teacher, student
    wt, bt = _padded(spec_t, wt, bt)
    wsp, bsp = _padded(spec_s, ws, bs)
    n = ht.shape[0]

    def body(carry, i):
        teacher_stats, student_stats = carry
        wt_i, bt_i, valid = _block(spec_t, wt, bt, i)
        ws_i, bs_i, _ = _block(spec_s, wsp, bsp, i)
        z_t = _teacher_logits(spec_t, beta, _logits(spec_t, ht, wt_i, bt_i), i, targets)
        z_s = _logits(spec_s, hs, ws_i, bs_i)
        return (_online_step(teacher_stats, z_t, (z_s, z_t), valid), _online_step(student_stats, z_s, (), valid)), None

    zero = jnp.zeros((n,), jnp.float32)
    start = (jnp.full((n,), -jnp.inf), zero)
    ((m, s, (a_s, a_t)), (m_s, s_s, _)), _ = jax.lax.scan(
        body, ((*start, (zero, zero)), (*start, ())), jnp.arange(spec_t.blocks)
    )
    lse_t, lse_s = m + jnp.log(s), m_s + jnp.log(s_s)
    out = (a_s / s, lse_s, a_t / s - lse_t)
    return out, (teacher, student, targets, lse_t, lse_s)


def _teacher_bwd(spec_t, spec_s, beta, res, g):
    teacher, (hs, ws, bs), targets, lse_t, lse_s = res
    g_expected, g_lse, _ = g  # the teacher's own entropy gets no gradient
    ht, wt, bt = teacher
    wt, bt = _padded(spec_t, wt, bt)

    def dz_of(i, z_s, valid):  # d E_q[z_s] / d z_s = q; d lse_s / d z_s = p_s
        wt_i, bt_i, _ = _block(spec_t, wt, bt, i)
        z_t = _teacher_logits(spec_t, beta, _logits(spec_t, ht, wt_i, bt_i), i, targets)
        return g_expected[:, None] * jnp.exp(z_t - lse_t[:, None]) + g_lse[:, None] * jnp.exp(z_s - lse_s[:, None])

    d_student = _backward_blocks(spec_s, hs, ws, bs, dz_of)
    return jax.tree.map(jnp.zeros_like, teacher), d_student, None


_teacher_expectation.defvjp(_teacher_fwd, _teacher_bwd)


def teacher_expectation(teacher: VocabHead, student: VocabHead, targets=None, beta: float = 0.0):
    """Per token, fp32 [B, T] each: (E_q[z_student], the student's logsumexp, the teacher's
    sum_v q_v log q_v), with q = softmax(z_teacher - beta onehot(target)) (beta 0: the
    teacher's own distribution), all from one pass over the vocabulary blocks. The teacher
    gets no gradient (it is the frozen reference); the student's is blockwise. Both heads
    must share the vocabulary and block width."""
    if teacher.spec.vocab_size != student.spec.vocab_size or teacher.spec.chunk != student.spec.chunk:
        raise ValueError("teacher and student heads must share the vocabulary and the block width")
    bt = student.hidden.shape[:2]
    tgt = jnp.zeros(bt, jnp.int32) if targets is None else targets
    out = _teacher_expectation(
        teacher.spec,
        student.spec,
        float(beta),
        (_flat(teacher.hidden), teacher.weight, teacher.bias),
        (_flat(student.hidden), student.weight, student.bias),
        tgt.reshape(-1),
    )
    return tuple(x.reshape(bt) for x in out)
