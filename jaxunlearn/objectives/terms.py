"""Every forget and retain term of SPEC section 2, as numerator/denominator pairs.

`pol` and `ref` map a stream name to StreamOutputs; `batch` maps a stream name to its
input_ids / attention_mask / labels. Numerators and denominators are per row, [B]: the
sum over the row's tokens (positions, or 1 for sequence-level terms) and their count;
denominators depend only on the batch. Objective.row_weights turns them into a mean over
the global batch or over groups of rows (base.py).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .base import ObjectiveOptions, Term
from .token_stats import avg_nll, log_probs, num_supervised, seq_nll, shifted, token_logp


def _rows(stream: str):
    return lambda batch, o: jnp.ones(batch[stream]["input_ids"].shape[0], jnp.float32)


def _tokens(stream: str):
    return lambda batch, o: num_supervised(batch[stream]["labels"]).astype(jnp.float32)


def _sum_logp(out, b) -> jax.Array:
    return token_logp(out.logits, b["labels"])[0].sum(-1)


def _ref_seq_nll(ref, batch, stream: str) -> jax.Array:
    """The reference's seqNLL: precomputed once per example when the loop provides it."""
    pre = ref.get("_ref_seqnll") if isinstance(ref, dict) else None
    if pre is not None and stream in pre:
        return pre[stream]
    return seq_nll(ref[stream].logits, batch[stream]["labels"])


# --- forget terms -------------------------------------------------------------------------


def ga_num(pol, ref, batch, o):
    return _sum_logp(pol["forget"], batch["forget"])  # -tokNLL: + sum log p


def npo_num(pol, ref, batch, o: ObjectiveOptions):
    b = batch["forget"]
    diff = _ref_seq_nll(ref, batch, "forget") - seq_nll(pol["forget"].logits, b["labels"])
    return -(2.0 / o.beta) * jax.nn.log_sigmoid(-o.beta * diff)


def simnpo_num(pol, ref, batch, o: ObjectiveOptions):
    avg = avg_nll(pol["forget"].logits, batch["forget"]["labels"])  # SimNPO's code: beta * (avgNLL - delta)
    return -(2.0 / o.simnpo_beta) * jax.nn.log_sigmoid(o.simnpo_beta * (avg - o.simnpo_delta))


def dpo_num(pol, ref, batch, o: ObjectiveOptions):
    f, i = batch["forget"]["labels"], batch["forget_idk"]["labels"]
    pi = -seq_nll(pol["forget_idk"].logits, i) + seq_nll(pol["forget"].logits, f)
    rf = -_ref_seq_nll(ref, batch, "forget_idk") + _ref_seq_nll(ref, batch, "forget")
    return -(2.0 / o.beta) * jax.nn.log_sigmoid(o.beta * (pi - rf))


def idk_num(pol, ref, batch, o):
    return -_sum_logp(pol["forget_idk"], batch["forget_idk"])


def _me_positions(b, o: ObjectiveOptions) -> jax.Array:
    """Mask [B, T-1] of the positions ME averages over (logit t predicts token t+1)."""
    if o.me_positions == "all_padded":
        return jnp.ones_like(b["labels"][:, 1:], dtype=bool)
    if o.me_positions == "prompt_and_answer":
        return b["attention_mask"][:, 1:].astype(bool)
    if o.me_positions == "answer":
        return b["labels"][:, 1:] != -100
    raise ValueError(f"unknown me.positions {o.me_positions!r}")


def me_num(pol, ref, batch, o: ObjectiveOptions):
    b = batch["forget"]
    logits = pol["forget"].logits[:, :-1].astype(jnp.float32)
    vocab = logits.shape[-1]
    eps = o.me_epsilon
    if o.me_direction == "uniform_ce":  # KL(U || P) = -log V - mean_v log P_v = lse - mean_v z_v - log V
        if eps:  # the paper's code: log(softmax(z) + eps), which caps the terms of tiny P_v
            per_pos = -jnp.log(jax.nn.softmax(logits, axis=-1) + eps).mean(-1) - math.log(vocab)
        else:
            per_pos = jax.nn.logsumexp(logits, axis=-1) - logits.mean(-1) - math.log(vocab)
    elif o.me_direction == "kl_to_uniform":  # KL(P || U) = log V - H(P)
        logp = log_probs(logits)
        per_pos = math.log(vocab) + (jnp.exp(logp) * (jnp.log(jnp.exp(logp) + eps) if eps else logp)).sum(-1)
    else:
        raise ValueError(f"unknown me.direction {o.me_direction!r}")
    return jnp.where(_me_positions(b, o), per_pos, 0.0).sum(-1)


def me_den(batch, o):
    return _me_positions(batch["forget"], o).sum(-1).astype(jnp.float32)


def undial_num(pol, ref, batch, o: ObjectiveOptions):
    b = batch["forget"]
    lg, targets, mask = shifted(pol["forget"].logits, b["labels"])
    teacher = ref["forget"].logits[:, :-1].astype(jnp.float32)
    teacher = teacher - o.undial_beta * jax.nn.one_hot(targets, teacher.shape[-1], dtype=teacher.dtype)
    soft = jax.nn.softmax(teacher, axis=-1)
    ce = -(soft * log_probs(lg)).sum(-1)
    return jnp.where(mask, ce, 0.0).sum(-1)


def wga_num(pol, ref, batch, o: ObjectiveOptions):
    logp, mask = token_logp(pol["forget"].logits, batch["forget"]["labels"])
    weight = jax.lax.stop_gradient(jnp.exp(o.wga_beta * logp))  # p^beta, no gradient
    return jnp.where(mask, weight * logp, 0.0).sum(-1)  # -(w * nll) summed


def rmu_control_vector(dim: int, o: ObjectiveOptions) -> jax.Array:
    """c * u with u a fixed random unit vector (uniform [0, 1) entries, normalised)."""
    u = jax.random.uniform(jax.random.PRNGKey(o.rmu_seed), (dim,), jnp.float32)
    return o.rmu_steering_coeff * u / jnp.linalg.norm(u)


def _layer_output(out, layer: int) -> jax.Array:
    return out.hidden_states[layer + 1].astype(jnp.float32)  # index 0 holds the embeddings


def _per_sequence_mse(h, target, labels) -> jax.Array:
    """Per row b: [sum_t mean_d (h - target)^2 over supervised t] / n_b (open-unlearning)."""
    mask = (labels != -100).astype(jnp.float32)
    per_tok = ((h - target) ** 2).mean(-1)
    return (per_tok * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)


def rmu_num(pol, ref, batch, o: ObjectiveOptions):
    h = _layer_output(pol["forget"], o.rmu_layer)
    return _per_sequence_mse(h, rmu_control_vector(h.shape[-1], o), batch["forget"]["labels"])


def _pooled_final(out, labels) -> jax.Array:
    """Mean of the final (normed) hidden state over the supervised positions, [B, D]."""
    h = out.hidden_states[-1].astype(jnp.float32)
    mask = (labels != -100).astype(jnp.float32)[..., None]
    return (h * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)


def dist_num(pol, ref, batch, o: ObjectiveOptions):
    """Chen et al. 2024, this project's reading (no code is public):

    negative distance: total variation between the policy's next-token distribution and the
    flagged (undesirable) output, 1 - p(y_t), is pushed up, i.e. sum_t p_theta(y_t) goes down;
    positive term: the pooled final hidden state of the forget answer is pulled toward the
    centroid of the expected outputs (the reference model's pooled states on the refusal
    stream of the batch).
    """
    b = batch["forget"]
    logp, mask = token_logp(pol["forget"].logits, b["labels"])
    neg = jnp.where(mask, jnp.exp(logp), 0.0).sum(-1) / jnp.maximum(mask.sum(-1), 1)
    centroid = jax.lax.stop_gradient(_pooled_final(ref["forget_idk"], batch["forget_idk"]["labels"]).mean(0))
    pooled = _pooled_final(pol["forget"], b["labels"])
    pos = ((pooled - centroid) ** 2).mean(-1)
    return o.dist_neg_weight * neg + o.dist_pos_weight * pos


# --- retain terms -------------------------------------------------------------------------


def gd_num(pol, ref, batch, o):
    return -_sum_logp(pol["retain"], batch["retain"])


def _kl_positions(b, o: ObjectiveOptions) -> jax.Array:
    if o.kl_positions == "all_padded":
        return jnp.ones_like(b["attention_mask"], dtype=bool)
    if o.kl_positions == "attended":
        return b["attention_mask"].astype(bool)
    raise ValueError(f"unknown kl.positions {o.kl_positions!r}")


def kl_num(pol, ref, batch, o: ObjectiveOptions):
    """KL(pi_ref || pi_theta) per position over the vocabulary, on the retain stream."""
    p_log = log_probs(pol["retain"].logits)
    r_log = log_probs(ref["retain"].logits)
    per_pos = (jnp.exp(r_log) * (r_log - p_log)).sum(-1)
    return jnp.where(_kl_positions(batch["retain"], o), per_pos, 0.0).sum(-1)


def kl_den(batch, o):
    return _kl_positions(batch["retain"], o).sum(-1).astype(jnp.float32)


def ap_num(pol, ref, batch, o: ObjectiveOptions):
    r, i = batch["retain"]["labels"], batch["retain_idk"]["labels"]
    diff = seq_nll(pol["retain_idk"].logits, i) - seq_nll(pol["retain"].logits, r)
    return -(1.0 / o.beta) * jax.nn.log_sigmoid(o.beta * diff)


def rmu_retain_num(pol, ref, batch, o: ObjectiveOptions):
    h = _layer_output(pol["retain"], o.rmu_layer)
    target = jax.lax.stop_gradient(_layer_output(ref["retain"], o.rmu_layer))
    return _per_sequence_mse(h, target, batch["retain"]["labels"])


FORGET_TERMS = {
    t.name: t
    for t in (
        Term("GA", "forget", "-tokNLL(a_f|q_f)", ("forget",), (), ga_num, _tokens("forget")),
        Term("NPO", "forget", "-(2/b) mean log s(-b (seqNLL_ref - seqNLL))", ("forget",), ("forget",),
             npo_num, _rows("forget")),
        Term("SimNPO", "forget", "-(2/b) mean log s(b avgNLL - d)", ("forget",), (), simnpo_num, _rows("forget")),
        Term("DPO", "forget", "-(2/b) mean log s(b h), refusal preferred", ("forget", "forget_idk"),
             ("forget", "forget_idk"), dpo_num, _rows("forget")),
        Term("IDK", "forget", "tokNLL(idk|q_f)", ("forget_idk",), (), idk_num, _tokens("forget_idk")),
        Term("ME", "forget", "mean over positions of KL(U||P_t) (or KL(P_t||U))", ("forget",), (), me_num, me_den),
        Term("UNDIAL", "forget", "CE(theta, softmax(ref logits - b onehot))", ("forget",), ("forget",),
             undial_num, _tokens("forget")),
        Term("WGA", "forget", "-mean p^b nll (weight without gradient)", ("forget",), (), wga_num, _tokens("forget")),
        Term("RMU", "forget", "||h_l(x_f) - c u||^2", ("forget",), (), rmu_num, _rows("forget"), needs_hidden=True),
        Term("DIST", "forget", "l_neg p(y) + l_pos ||pool h - centroid||^2 (Chen et al.)", ("forget",),
             ("forget_idk",), dist_num, _rows("forget"), needs_hidden=True),
    )
}

RETAIN_TERMS = {
    t.name: t
    for t in (
        Term("GD", "retain", "tokNLL(a_r|q_r)", ("retain",), (), gd_num, _tokens("retain")),
        Term("KL", "retain", "KL(pi_ref || pi_theta) per position", ("retain",), ("retain",), kl_num, kl_den),
        Term("AP", "retain", "-(1/b) mean log s(b (seqNLL(idk|q_r) - seqNLL(a_r|q_r)))",
             ("retain", "retain_idk"), (), ap_num, _rows("retain")),
        Term("RMU_RETAIN", "retain", "||h_l(x_r) - h_l,ref(x_r)||^2", ("retain",), ("retain",), rmu_retain_num,
             _rows("retain"), needs_hidden=True),
    )
}
