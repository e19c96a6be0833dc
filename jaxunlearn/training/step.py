"""The train step: one `jax.jit` over a mesh, the policy state donated, the reference a
separate frozen argument.

    state, metrics = step(state, ref_params, batch)

Each stream the policy needs gets its own forward (streams may have different padded
lengths). The reference forward runs only for the streams its terms
need, under stop_gradient, outside the differentiated function. Gradient accumulation
scans over micro-batches with per-row weights computed from the global batch, so it equals
the full batch. A
non-finite loss or gradient leaves the state unchanged and reports `finite = False`.
"""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from ..errors import ConfigError
from ..models.lora import adapters_off
from ..objectives import Objective, StepBatch, StreamOutputs
from ..parallel import logical_sharding

BATCH_AXES = ("data", "fsdp")


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState
    rng: jax.Array


def param_shardings(params: nnx.State, mesh, rules=None):
    """NamedSharding per parameter from its logical axes (Variable wrappers kept)."""

    def one(v):
        return v.replace(logical_sharding(v.get_metadata()["logical_axes"], v.get_value().shape, mesh, rules))

    return jax.tree.map(one, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def place_params(params: nnx.State, mesh, rules=None) -> nnx.State:
    """Put each parameter on the mesh with its logical-axes sharding."""
    return jax.tree.map(lambda x, s: jax.device_put(x, s), params, param_shardings(params, mesh, rules))


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def check_batch_divisible(global_batch: int, micro_batches: int, mesh) -> None:
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    per_micro = global_batch // micro_batches
    if per_micro % ways:
        raise ConfigError(
            f"the batch of {global_batch} ({micro_batches} micro-batches of {per_micro}) cannot be split over "
            f"data x fsdp = {ways} devices; choose train.batch_size a multiple of {ways * micro_batches}"
        )


def init_state(params: nnx.State, tx: optax.GradientTransformation, seed: int) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=jax.random.PRNGKey(seed)
    )


def state_shardings(params, tx: optax.GradientTransformation, mesh) -> TrainState:
    """Shardings of the TrainState built from `params` (arrays or ShapeDtypeStructs that carry
    a sharding): each optimizer moment takes the sharding of the parameter at the end of its
    path (optax mirrors the parameter tree), everything else is replicated. Left to XLA,
    the zero-initialized moments would come out replicated and an FSDP run would hold full
    AdamW state on every device."""
    replicated = NamedSharding(mesh, PartitionSpec())
    param_sh = jax.tree.map(lambda x: x.sharding, params)
    by_path = {
        tuple(path): (leaf.shape, leaf.sharding) for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    abstract = jax.eval_shape(lambda p: tx.init(p), params)

    def one(path, leaf):
        for k in range(len(path)):
            shape_sharding = by_path.get(tuple(path[k:]))
            if shape_sharding is not None and shape_sharding[0] == leaf.shape:
                return shape_sharding[1]
        return replicated

    opt_sh = jax.tree_util.tree_map_with_path(one, abstract)
    return TrainState(step=replicated, params=param_sh, opt_state=opt_sh, rng=replicated)


def sharded_init_state(params, tx: optax.GradientTransformation, seed: int, mesh) -> TrainState:
    """init_state with the optimizer state sharded like the parameters (see state_shardings)."""
    return jax.jit(lambda p: init_state(p, tx, seed), out_shardings=state_shardings(params, tx, mesh))(params)


def cast_for_compute(params, dtype, shardings=None):
    """Floating parameters in the compute dtype, each kept on its own sharding: the cast runs
    on every device's shard, so FSDP all-gathers bf16 weights (half the bytes) and
    reduce-scatters bf16 gradients, while the master copy and AdamW state stay fp32."""

    def one(x, sharding=None):
        if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
            return x
        y = x.astype(dtype)
        return y if sharding is None else jax.lax.with_sharding_constraint(y, sharding)

    if shardings is None:
        return jax.tree.map(one, params)
    return jax.tree.map(one, params, shardings)


def run_streams(
    graphdef, params, batch: StepBatch, streams, hidden: bool, dropout_key=None, vocab_block: int = 0
) -> dict[str, StreamOutputs]:
    """One forward per stream (params: a state, or a tuple of states merged: LoRA's
    adapters and frozen base). vocab_block > 0: each stream's `logits` is the model's
    VocabHead, whose statistics run by vocabulary blocks (models.vocab_head). Separate
    forwards, not one over the concatenated streams:
    slicing the joint [B, T, V] logits apart costs a copy (and its transpose in the
    backward) that is slower than the smaller matmuls, and raises peak memory."""
    if not streams:
        return {}
    model = nnx.merge(graphdef, *params) if isinstance(params, tuple) else nnx.merge(graphdef, params)
    result = {}
    for i, s in enumerate(streams):
        b = batch.streams[s]
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, i)
        out = model.forward(  # batches are right-padded (data.batching.pad_rows): fused attention may serve
            b.input_ids,
            b.attention_mask,
            output_hidden_states=hidden,
            dropout_key=key,
            vocab_chunk=vocab_block,
            right_padded=True,
        )
        result[s] = StreamOutputs(out.head if vocab_block else out.logits, out.hidden_states if hidden else None)
    return result


def _micro(batch, m: int):
    return jax.tree.map(lambda x: x.reshape(m, x.shape[0] // m, *x.shape[1:]), batch)


def make_train_step(
    graphdef,
    objective: Objective,
    tx: optax.GradientTransformation,
    schedule,
    micro_batches: int = 1,
    trainable_mask=None,
    use_reference: bool = True,
    mean_group_rows: int | None = None,
    compute_dtype=None,
    param_shardings_tree=None,
    lora: bool = False,
    dropout: bool = False,
    vocab_block: int = 0,
):
    """The un-jitted step function; `jit_train_step` adds shardings and donation.
    mean_group_rows: None takes each term's mean over the global batch; k takes it per
    group of k rows and averages the groups (the paper code's gradient accumulation).
    compute_dtype: when lower than the parameters' (mixed precision), the forward runs on a
    cast copy kept on `param_shardings_tree` (see cast_for_compute).
    lora: the state holds only the adapters and the step's second argument is the frozen
    base; the policy is base + adapters, the reference base + adapters switched off.
    dropout: the policy forwards get a LoRA-dropout key from the state's PRNG key (per step,
    micro-batch and stream), so a resumed run draws the same masks.
    vocab_block: > 0 computes every per-token statistic by blocks of about that many
    vocabulary columns, forward and backward, so no [B, T, V] logits exist (0: full logits)."""
    hidden = objective.needs_hidden
    ref_streams = objective.ref_streams if use_reference else ()

    def cast(params, shardings=None):
        return params if compute_dtype is None else cast_for_compute(params, compute_dtype, shardings)

    def loss_fn(params, frozen, ref_out, mb, weights, key):
        policy = cast(params, param_shardings_tree)
        if lora:
            policy = (policy, cast(frozen))
        pol = run_streams(graphdef, policy, mb, objective.policy_streams, hidden, key if dropout else None, vocab_block)
        return objective.loss(pol, ref_out, mb, weights)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def micro_step(params, ref_params, mb, weights, key):
        reference = (cast(adapters_off(params)), cast(ref_params)) if lora and ref_streams else ref_params
        ref_out = jax.lax.stop_gradient(
            run_streams(graphdef, reference, mb, ref_streams, hidden, vocab_block=vocab_block)
        )
        (loss, values), grads = grad_fn(params, ref_params, ref_out, mb, weights, key)
        return loss, values, grads

    def step(state: TrainState, ref_params, batch: StepBatch, halted=None, votes=None):
        """halted (a bool scalar, the previous step's metrics["halted"]): a step after a
        non-finite one changes nothing, so the loop may read metrics one step late and still
        stop on the last finite state. votes [batch rows, k] int (each process fills its own
        rows): metrics["votes"] is their maximum per column, what every process decides on
        (stop, save) when it reads the metrics, with no collective of its own."""
        weights = objective.row_weights(batch, mean_group_rows)  # from the global batch
        keys = jax.random.split(jax.random.fold_in(state.rng, 1), micro_batches)  # LoRA dropout
        if micro_batches == 1:
            loss, values, grads = micro_step(state.params, ref_params, batch, weights, keys[0])
        else:
            zeros = jax.tree.map(jnp.zeros_like, state.params)

            def body(carry, xs):
                loss_acc, values_acc, grads_acc = carry
                mb, mb_weights, key = xs
                loss, values, grads = micro_step(state.params, ref_params, mb, mb_weights, key)
                values_acc = jax.tree.map(jnp.add, values_acc, values)
                return (loss_acc + loss, values_acc, jax.tree.map(jnp.add, grads_acc, grads)), None

            init_values = {t.name: jnp.zeros((), jnp.float32) for t, _ in objective.terms}
            (loss, values, grads), _ = jax.lax.scan(
                body,
                (jnp.zeros((), jnp.float32), init_values, zeros),
                (_micro(batch, micro_batches), _micro(weights, micro_batches), keys),
            )
        if trainable_mask is not None:
            grads = jax.tree.map(lambda g, m: g * m, grads, trainable_mask)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if trainable_mask is not None:
            updates = jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, trainable_mask)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if halted is not None:
            finite = finite & ~halted
        new = TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=jax.random.split(state.rng)[0])
        kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        tokens = sum(batch.streams[s].attention_mask.sum() for s in objective.policy_streams)
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "lr": schedule(state.step),
            "finite": finite,
            "halted": ~finite,
            "tokens": tokens,
            **{f"loss/{k}": v for k, v in values.items()},
        }
        if votes is not None:
            metrics["votes"] = jnp.max(votes, axis=0)
        return kept, metrics

    return step


def jit_train_step(step_fn, state: TrainState, ref_params, mesh, gated: bool = False):
    """jax.jit with explicit shardings: the state keeps its own, the batch splits over
    (data, fsdp), the reference keeps its own and is never donated. gated: the step takes
    two more arguments, the previous step's metrics["halted"] and the votes, split like the
    batch (see make_train_step)."""
    state_sh = jax.tree.map(lambda x: x.sharding, state)
    ref_sh = jax.tree.map(lambda x: x.sharding, ref_params) if ref_params is not None else None
    replicated = NamedSharding(mesh, PartitionSpec())
    gate = (replicated, batch_sharding(mesh)) if gated else ()
    return jax.jit(
        step_fn,
        in_shardings=(state_sh, ref_sh, batch_sharding(mesh), *gate),
        out_shardings=(state_sh, replicated),
        donate_argnums=(0,),
    )


def place_batch(batch, mesh):
    """Global arrays from each process's slice of the batch (or the whole of it)."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def sequence_nll(graphdef, params, ids, mask, labels):
    """seqNLL per row (used to precompute the reference's NPO/DPO log-probs once)."""
    from ..objectives.token_stats import seq_nll

    model = nnx.merge(graphdef, *params) if isinstance(params, tuple) else nnx.merge(graphdef, params)
    logits = model.forward(ids, mask).logits
    return seq_nll(logits, labels)
