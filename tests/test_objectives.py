"""Every objective term against a hand-written numpy computation of its SPEC formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxunlearn.errors import ConfigError
from jaxunlearn.objectives import (
    FORGET_TERMS,
    RETAIN_TERMS,
    ObjectiveOptions,
    StepBatch,
    StreamOutputs,
    build_objective,
)

B, T, V, D, LAYERS = 3, 7, 11, 5, 4
STREAMS = ("forget", "retain", "forget_idk", "retain_idk", "forget_expected")


def make_batch(seed=0):
    rng = np.random.RandomState(seed)
    batch, pol, ref = {}, {}, {}
    for k, s in enumerate(STREAMS):
        ids = rng.randint(0, V, (B, T)).astype(np.int32)
        mask = np.ones((B, T), np.int32)
        mask[0, -2:] = 0  # right padding
        labels = ids.copy()
        labels[:, : 2 + k % 2] = -100  # prompt
        labels[mask == 0] = -100
        batch[s] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        pol[s] = StreamOutputs(
            rng.randn(B, T, V).astype(np.float32) * 2, rng.randn(LAYERS + 1, B, T, D).astype(np.float32)
        )
        ref[s] = StreamOutputs(
            rng.randn(B, T, V).astype(np.float32) * 2, rng.randn(LAYERS + 1, B, T, D).astype(np.float32)
        )
    return StepBatch.from_arrays(batch), pol, ref


def np_logsoftmax(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def np_token_logp(logits, labels):
    """Explicit loops: log p(label[t+1]) from logits[t] where supervised."""
    lp = np_logsoftmax(logits)
    out, mask = np.zeros((B, T - 1)), np.zeros((B, T - 1), bool)
    for b in range(B):
        for t in range(T - 1):
            if labels[b, t + 1] != -100:
                out[b, t] = lp[b, t, labels[b, t + 1]]
                mask[b, t] = True
    return out, mask


def seq_nll(logits, labels):
    lp, _ = np_token_logp(logits, labels)
    return -lp.sum(1)


def tok_nll(logits, labels):
    lp, m = np_token_logp(logits, labels)
    return -lp.sum() / m.sum()


def logsig(x):
    return -np.log1p(np.exp(-x))


def value(name, batch, pol, ref, **opts):
    o = ObjectiveOptions(**opts)
    term = {**FORGET_TERMS, **RETAIN_TERMS}[name]
    num, den = term.numerator(pol, ref, batch, o), term.denominator(batch, o)
    assert num.shape == den.shape == (B,)  # per row
    return float(num.sum() / den.sum())


@pytest.fixture(scope="module")
def data():
    return make_batch()


def test_ga_idk_gd(data):
    batch, pol, ref = data
    assert value("GA", *data) == pytest.approx(-tok_nll(pol["forget"].logits, batch.streams["forget"].labels), rel=1e-5)
    assert value("IDK", *data) == pytest.approx(
        tok_nll(pol["forget_idk"].logits, batch.streams["forget_idk"].labels), rel=1e-5
    )
    assert value("GD", *data) == pytest.approx(tok_nll(pol["retain"].logits, batch.streams["retain"].labels), rel=1e-5)


def test_npo(data):
    batch, pol, ref = data
    lab, beta = batch.streams["forget"].labels, 0.1
    diff = seq_nll(ref["forget"].logits, lab) - seq_nll(pol["forget"].logits, lab)
    want = np.mean(-(2 / beta) * logsig(-beta * diff))
    assert value("NPO", *data) == pytest.approx(want, rel=1e-5)
    # at pi_theta == pi_ref the loss is (2/b) log 2
    same = {**pol}
    assert value("NPO", batch, same, same) == pytest.approx(2 / beta * math.log(2), rel=1e-5)


def test_simnpo(data):
    batch, pol, ref = data
    lab = batch.streams["forget"].labels
    lp, m = np_token_logp(pol["forget"].logits, lab)
    avg = -lp.sum(1) / m.sum(1)
    beta, delta = 4.5, 0.3
    want = np.mean(-(2 / beta) * logsig(beta * (avg - delta)))  # SimNPO's code: beta * (avgNLL - delta)
    assert value("SimNPO", *data, simnpo_delta=delta) == pytest.approx(want, rel=1e-5)


def test_dpo(data):
    batch, pol, ref = data
    f, i, beta = batch.streams["forget"].labels, batch.streams["forget_idk"].labels, 0.1
    lp = lambda m, s, lab: -seq_nll(m[s].logits, lab)  # noqa: E731
    h = (lp(pol, "forget_idk", i) - lp(pol, "forget", f)) - (lp(ref, "forget_idk", i) - lp(ref, "forget", f))
    assert value("DPO", *data) == pytest.approx(np.mean(-(2 / beta) * logsig(beta * h)), rel=1e-5)


def test_ap(data):
    batch, pol, ref = data
    r, i, beta = batch.streams["retain"].labels, batch.streams["retain_idk"].labels, 0.1
    diff = seq_nll(pol["retain_idk"].logits, i) - seq_nll(pol["retain"].logits, r)
    assert value("AP", *data) == pytest.approx(np.mean(-(1 / beta) * logsig(beta * diff)), rel=1e-5)


@pytest.mark.parametrize("positions", ["all_padded", "prompt_and_answer", "answer"])
@pytest.mark.parametrize("direction", ["uniform_ce", "kl_to_uniform"])
def test_me(data, positions, direction):
    batch, pol, ref = data
    b = batch.streams["forget"]
    p = np.exp(np_logsoftmax(pol["forget"].logits[:, :-1]))
    if direction == "uniform_ce":  # paper code: KL(U||P) = sum_v (1/V) (log(1/V) - log P_v)
        per = (1.0 / V * (np.log(1.0 / V) - np.log(p))).sum(-1)
    else:  # paper text: KL(P||U) = log V - H(P)
        per = np.log(V) + (p * np.log(p)).sum(-1)
    mask = {
        "all_padded": np.ones((B, T - 1), bool),
        "prompt_and_answer": b.attention_mask[:, 1:] == 1,
        "answer": b.labels[:, 1:] != -100,
    }[positions]
    want = per[mask].mean()
    got = value("ME", *data, me_positions=positions, me_direction=direction)
    assert got == pytest.approx(want, rel=1e-5)


def test_me_is_minimal_at_uniform_logits(data):
    batch, pol, ref = data
    uniform = {"forget": StreamOutputs(np.zeros((B, T, V), np.float32))}
    for direction in ("uniform_ce", "kl_to_uniform"):
        assert value("ME", batch, uniform, ref, me_direction=direction) == pytest.approx(0.0, abs=1e-6)
        assert value("ME", batch, pol, ref, me_direction=direction) > 1e-3


@pytest.mark.parametrize("positions", ["attended", "all_padded"])
def test_kl(data, positions):
    batch, pol, ref = data
    lp, lr = np_logsoftmax(pol["retain"].logits), np_logsoftmax(ref["retain"].logits)
    per = (np.exp(lr) * (lr - lp)).sum(-1)
    if positions == "all_padded":  # paper code: sum over every position / (B*L)
        want = per.sum() / (B * T)
    else:
        want = per[batch.streams["retain"].attention_mask == 1].mean()
    assert value("KL", *data, kl_positions=positions) == pytest.approx(want, rel=1e-5)


def test_undial(data):
    batch, pol, ref = data
    lab = batch.streams["forget"].labels
    lp_s = np_logsoftmax(pol["forget"].logits)
    total, n = 0.0, 0
    for b in range(B):
        for t in range(T - 1):
            y = lab[b, t + 1]
            if y == -100:
                continue
            teacher = ref["forget"].logits[b, t].astype(np.float64).copy()
            teacher[y] -= 10.0
            soft = np.exp(teacher - teacher.max())
            soft /= soft.sum()
            total += -(soft * lp_s[b, t]).sum()
            n += 1
    assert value("UNDIAL", *data) == pytest.approx(total / n, rel=1e-5)


def test_wga(data):
    batch, pol, ref = data
    lp, m = np_token_logp(pol["forget"].logits, batch.streams["forget"].labels)
    beta = 0.7
    want = (np.exp(beta * lp) * lp)[m].mean()  # -(w * nll).mean()
    assert value("WGA", *data, wga_beta=beta) == pytest.approx(want, rel=1e-5)


def _mse_per_seq(h, target, labels):
    mask = labels != -100
    per_tok = ((h - target) ** 2).mean(-1)
    return np.mean([(per_tok[b][mask[b]]).sum() / mask[b].sum() for b in range(B)])


def test_rmu_forget_and_retain(data):
    import jax

    batch, pol, ref = data
    layer, coeff = 2, 6.5
    u = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (D,)))
    control = coeff * u / np.linalg.norm(u)
    want = _mse_per_seq(pol["forget"].hidden_states[layer + 1], control, batch.streams["forget"].labels)
    assert value("RMU", *data, rmu_layer=layer, rmu_steering_coeff=coeff) == pytest.approx(want, rel=1e-5)
    want_r = _mse_per_seq(
        pol["retain"].hidden_states[layer + 1], ref["retain"].hidden_states[layer + 1], batch.streams["retain"].labels
    )
    assert value("RMU_RETAIN", *data, rmu_layer=layer) == pytest.approx(want_r, rel=1e-5)


def test_dist(data):
    batch, pol, ref = data
    lab = batch.streams["forget"].labels
    lp, m = np_token_logp(pol["forget"].logits, lab)
    neg = np.mean([np.exp(lp[b][m[b]]).mean() for b in range(B)])

    def pooled(out, labels):
        h, mask = out.hidden_states[-1], labels != -100
        return np.stack([h[b][mask[b]].mean(0) for b in range(B)])

    centroid = pooled(ref["forget_expected"], batch.streams["forget_expected"].labels).mean(0)
    pos = ((pooled(pol["forget"], lab) - centroid) ** 2).mean(-1).mean()
    got = value("DIST", *data, dist_neg_weight=0.5, dist_pos_weight=2.0)
    assert got == pytest.approx(0.5 * neg + 2.0 * pos, rel=1e-5)


def test_composition_weights_streams_and_reference(data):
    batch, pol, ref = data
    obj = build_objective("ME+GD", forget_weight=0.1, retain_weight=1.0)
    total, values = obj.loss(pol, ref, batch, obj.row_weights(batch))
    assert float(total) == pytest.approx(0.1 * float(values["ME"]) + float(values["GD"]), rel=1e-6)
    assert obj.streams == ("forget", "retain") and not obj.needs_reference
    assert build_objective("IDK+AP").streams == ("forget_idk", "retain", "retain_idk")
    npo_kl = build_objective("kl+npo")  # case-insensitive, any order
    assert npo_kl.name == "NPO+KL" and npo_kl.needs_reference and npo_kl.ref_streams == ("forget", "retain")
    assert build_objective("GD").streams == ("retain",)
    with pytest.raises(ConfigError, match="unknown objective term 'XYZ'.*GA, NPO"):
        build_objective("XYZ+GD")
    with pytest.raises(ConfigError, match="two forget terms"):
        build_objective("GA+NPO")


def test_fused_target_logp_gradient_matches_autodiff():
    """The custom VJP (softmax - onehot in one pass) equals autodiff of log-softmax + gather."""
    import jax
    import jax.numpy as jnp

    from jaxunlearn.objectives.token_stats import target_logp

    rng = np.random.RandomState(0)
    logits = jnp.asarray(rng.randn(2, 5, 11) * 3, jnp.float32)
    targets = jnp.asarray(rng.randint(0, 11, (2, 5)), jnp.int32)
    weights = jnp.asarray(rng.randn(2, 5), jnp.float32)

    def reference(x):
        logp = jax.nn.log_softmax(x, axis=-1)
        return (jnp.take_along_axis(logp, targets[..., None], -1)[..., 0] * weights).sum()

    fused = lambda x: (target_logp(x, targets) * weights).sum()  # noqa: E731
    np.testing.assert_allclose(fused(logits), reference(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(fused)(logits), jax.grad(reference)(logits), atol=1e-6)
    bf16 = jax.grad(fused)(logits.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.bfloat16


def test_a_new_term_is_one_registration(data):
    """A term registered from outside the package composes, declares its streams and runs."""
    from jaxunlearn.objectives import TERMS, register_term
    from jaxunlearn.objectives.terms.common import rows

    @register_term("MISMATCH_TEST", "retain", "tokNLL(a_r|q_f)", ("forget_mismatch",), rows("forget_mismatch"))
    def mismatch(pol, ref, batch, o):
        return -pol["forget_mismatch"].logits[:, 0, 0]

    try:
        obj = build_objective("GA+MISMATCH_TEST")
        assert obj.streams == ("forget", "forget_mismatch") and not obj.needs_reference
        batch, pol, ref = data
        out = {"forget": pol["forget"], "forget_mismatch": pol["retain"]}
        both = StepBatch({**batch.streams, "forget_mismatch": batch.streams["retain"]})
        total, values = obj.loss(out, ref, both, obj.row_weights(both))
        assert float(values["MISMATCH_TEST"]) == pytest.approx(-float(np.mean(pol["retain"].logits[:, 0, 0])), rel=1e-6)
    finally:
        TERMS.pop("MISMATCH_TEST")


def test_engine_data_and_config_name_no_term():
    """The loop, the step, the data setup and the config know terms only through the registry."""
    import pathlib
    import re

    from jaxunlearn.objectives import TERMS

    root = pathlib.Path(__file__).parents[1] / "jaxunlearn"
    files = [*(root / "training").glob("*.py"), *(root / "data").glob("*.py"), root / "config.py"]
    for path in files:
        text = path.read_text()
        for name in TERMS:
            assert not re.search(rf"[\"']{re.escape(name)}[\"'+]", text), f"{path.name} names the term {name}"


def test_dist_out(data):
    batch, pol, ref = data
    lab = batch.streams["forget"].labels
    lp, m = np_token_logp(pol["forget"].logits, lab)
    neg = np.array([np.exp(lp[b][m[b]]).mean() for b in range(B)])
    elab = batch.streams["forget_expected"].labels
    elp, em = np_token_logp(pol["forget_expected"].logits, elab)
    nll = np.array([-elp[b][em[b]].mean() for b in range(B)])
    got = value("DIST_OUT", *data, dist_neg_weight=0.5, dist_pos_weight=2.0)
    assert got == pytest.approx(np.mean(0.5 * neg + 2.0 * nll), rel=1e-5)
    assert not build_objective("DIST_OUT+GD").needs_reference
