"""Batched greedy (or temperature-sampled) decoding with a KV cache, from left-padded
prompts, jitted once per shape."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..models.config import to_dtype
from ..models.decoder import PROJECTIONS
from ..models.stack import unstack_layers
from ..parallel import host_get, place_rows
from .projection_layout import projection_layout


def _pick(logits, key, temperature, sample: bool):
    """Greedy argmax, or a draw from softmax(logits / temperature) when sampling."""
    if not sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, logits.astype(jnp.float32) / temperature, axis=-1).astype(jnp.int32)


class Carry(NamedTuple):
    """The decoding loop's state: the step, then per row its next token, its tokens so far
    [B, max_new_tokens], whether it is done, its budget of new tokens; the KV cache."""

    i: jax.Array
    tok: jax.Array
    tokens: jax.Array
    done: jax.Array
    budgets: jax.Array
    cache: object

    def take_rows(self, rows) -> "Carry":
        """The state of batch rows `rows` (int [b]), in that order."""
        take = lambda x: jnp.take(x, rows, axis=0)  # noqa: E731
        return Carry(self.i, *(take(x) for x in self[1:5]), self.cache.take_rows(rows))


def _decode(model, layer_params, carry: Carry, keys, eos_ids, pad_id, temperature, sample, stop_at, steps):
    """Decode from `carry` until every row is done, the buffer is full, or at most
    `stop_at` rows are still live (0: never stop early) while a live row's budget leaves
    at least `steps` steps (fewer would not pay for a smaller program's compile)."""
    b, max_new_tokens = carry.tokens.shape

    def cond(c):
        live = jnp.sum(~c.done)
        left = jnp.max(jnp.where(c.done, 0, c.budgets)) - c.i
        shrink = (live <= stop_at) & (left >= steps)
        return (c.i < max_new_tokens) & (live > 0) & ~shrink

    def body(c):
        tok = jnp.where(c.done, pad_id, c.tok)
        tokens = c.tokens.at[:, c.i].set(tok)
        done = c.done | jnp.isin(tok, eos_ids) | (c.i + 1 >= c.budgets)  # a row stops at its own budget
        step = model.forward(tok[:, None], jnp.ones((b, 1), jnp.int32), cache=c.cache, layer_params=layer_params)
        nxt = _pick(step.logits[:, -1], keys[c.i + 1], temperature, sample)
        return c._replace(i=c.i + 1, tok=nxt, tokens=tokens, done=done, cache=step.cache)

    return jax.lax.while_loop(cond, body, carry)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "sample"))
def _greedy(
    graphdef,
    state,
    layer_params,
    input_ids,
    attention_mask,
    eos_ids,
    pad_id,
    budgets,
    max_new_tokens: int,
    key=None,
    temperature=1.0,
    sample: bool = False,
    stop_at=0,
    steps=0,
):
    """The prompt's prefill, then `_decode`: (its carry, the per-step PRNG keys)."""
    model = nnx.merge(graphdef, state)
    b, t = input_ids.shape
    cache = model.init_cache(b, t + max_new_tokens)
    out = model.forward(input_ids, attention_mask, cache=cache, logits_to_keep=1)  # the prompt: scanned layers
    if layer_params is not None:
        out = out.replace(cache=out.cache.split_layers())
    keys = jax.random.split(key if sample else jax.random.key(0), max_new_tokens + 1)
    first = _pick(out.logits[:, -1], keys[0], temperature, sample)
    tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32)
    carry = Carry(jnp.int32(0), first, tokens, budgets <= 0, budgets, out.cache)
    return _decode(model, layer_params, carry, keys, eos_ids, pad_id, temperature, sample, stop_at, steps), keys


@functools.partial(jax.jit, static_argnames=("graphdef", "sample"))
def _resume(graphdef, state, layer_params, carry, rows, keys, eos_ids, pad_id, temperature, sample, stop_at, steps):
    """`_decode` continued on the batch rows `rows` of `carry` (a smaller batch)."""
    model = nnx.merge(graphdef, state)
    carry = carry.take_rows(rows)
    return _decode(model, layer_params, carry, keys, eos_ids, pad_id, temperature, sample, stop_at, steps)


# A batch shrinks to half its rows once half of them are done (`run_decoding`), down to
# SHRINK_MIN_ROWS rows: on CPU a decoding step costs about 27 ms + 2.8 ms a row (SmolLM2),
# so the finished rows of a batch of 64 would cost more than the live ones. It shrinks
# only while a live row's budget leaves SHRINK_MIN_STEPS steps: each smaller program
# compiles once (about 0.8 s for SmolLM2 on a 2-core CPU), which a few steps would not
# repay. 60 rows with TOFU's answer lengths as budgets: 12.6-13.3 s against 15.2-15.7 s.
SHRINK_MIN_ROWS = 4
SHRINK_MIN_STEPS = 16


LAYER_LOOPS = ("auto", "scan", "unrolled")


def on_one_cpu(mesh) -> bool:
    """Whether batches run on the CPU without a mesh: where a decoding step's cost grows
    with its rows (so batches shrink) and its attention leaves a core idle (so generation
    runs beside scoring, `overlap.overlaps_generation`)."""
    return mesh is None and jax.default_backend() == "cpu"


def decoding_layers(model, layer_loop: str = "auto", projections: str = "auto"):
    """The per-layer parameters the decoding loop runs unrolled with, or None to scan.

    auto: unrolled on CPU, where the scan's per-layer weight slices are copies that cost more
    than the matmuls of one token (SmolLM2, batch 16: 150 -> 74 ms per token);
    scanned on accelerators, where the unrolled loop would hold a second copy of the layer
    weights in device memory. Make it once per batch of generate calls: it copies weights.
    projections: how the unrolled layers multiply their projections, a `PROJECTION_LAYOUTS`
    name ("rows" x @ W, "columns" from W's transpose; see `projection_layout`)."""
    if layer_loop not in LAYER_LOOPS:
        raise ValueError(f"unknown layer_loop {layer_loop!r}; use one of {LAYER_LOOPS}")
    layout = projection_layout(projections)
    if layer_loop == "scan" or (layer_loop == "auto" and jax.default_backend() != "cpu"):
        return None
    arrays = model.layers.arrays()
    columns = tuple(k for k in arrays if k in PROJECTIONS) if layout == "columns" else ()
    return unstack_layers(arrays, to_dtype(model.config.compute_dtype), columns)


def greedy_generate(model, input_ids, attention_mask, max_new_tokens: int, eos_token_ids, pad_token_id: int, **options):
    """Greedy continuation of left-padded prompts: int32 [B, max_new_tokens]; with
    `temperature` > 0, tokens are drawn from softmax(logits / temperature) (PRNG `seed`).

    Each row stops at its first EOS (which is kept) or after its own budget of new tokens
    (`budgets` [B], default max_new_tokens for every row); later slots hold `pad_token_id`.
    max_new_tokens only sizes the buffers (one compile per value), so callers may round it
    up. layer_params: a `LAYER_LOOPS` name (default auto), or what `decoding_layers`
    returned (reused). With a `mesh` the rows are split over its batch axes; every process
    of a multi-host launch passes the same prompts and gets every row back. `options` are
    those of `decoding_call`.
    """
    return run_decoding(
        decoding_call(model, input_ids, attention_mask, max_new_tokens, eos_token_ids, pad_token_id, **options)
    )


class DecodingCall(NamedTuple):
    """One call of the jitted decoding program: its placed arguments, its keyword arguments
    (`sample` is static; `stop_at` and `steps` say when the batch shrinks, see `_decode`;
    stop_at 0: never), and `program`, what besides the model sets the compiled program
    (the prompt batch's shape and placement, the buffer's new tokens, greedy or sampled)."""

    args: tuple
    options: dict
    program: tuple


def shrunk_size(rows: int) -> int:
    """The rows a batch of `rows` shrinks to once half of them are done: half, or 0 (it
    never shrinks) below 2 x SHRINK_MIN_ROWS."""
    return rows // 2 if rows // 2 >= SHRINK_MIN_ROWS else 0


def run_decoding(call: DecodingCall) -> np.ndarray:
    """The tokens of one `decoding_call`, on the host. A batch that may shrink stops when
    half its rows are done and continues with the live rows only (padded with a done row),
    as often as `shrunk_size` allows: the finished rows stop costing a share of every
    step. Greedy tokens do not change (each row's computation is its own)."""
    carry, keys = _greedy(*call.args, **call.options)
    if not int(call.options["stop_at"]):
        return np.asarray(host_get(carry.tokens))
    graphdef, state, layer_params, _, _, eos, pad, _, max_new_tokens, _, temperature = call.args
    tokens = np.empty(carry.tokens.shape, np.int32)
    rows = np.arange(len(tokens))  # the original row of each row of the running batch
    while True:
        step, done, now = (np.asarray(x) for x in host_get((carry.i, carry.done, carry.tokens)))
        tokens[rows] = now  # a done row's tokens are final; a live row's are overwritten later
        live = np.flatnonzero(~done)
        if not len(live) or int(step) >= max_new_tokens:
            return tokens
        size = shrunk_size(len(done))  # the loop stopped at this many live rows or fewer
        keep = np.concatenate([live, np.repeat(np.flatnonzero(done)[:1], size - len(live))])
        options = {**call.options, "stop_at": jnp.int32(shrunk_size(size))}
        carry = _resume(
            graphdef, state, layer_params, carry, jnp.asarray(keep, jnp.int32), keys, eos, pad, temperature, **options
        )
        rows = rows[keep]


def decoding_call(
    model,
    input_ids,
    attention_mask,
    max_new_tokens: int,
    eos_token_ids,
    pad_token_id: int,
    layer_params="auto",
    budgets=None,
    temperature: float = 0.0,
    seed: int = 0,
    mesh=None,
    shrink: bool | None = None,
) -> DecodingCall:
    """The placed arguments of the jitted decoding program that `greedy_generate` runs
    with the same inputs (`run_decoding` runs it), for `compile_decoding` to compile ahead.
    shrink: let the batch continue with its live rows only once half are done (None: on
    CPU without a mesh, where a step's cost grows with its rows)."""
    if isinstance(layer_params, str):
        layer_params = decoding_layers(model, layer_params)
    graphdef, state = nnx.split(model)
    eos = jnp.asarray(np.atleast_1d(np.asarray(eos_token_ids, np.int32)))
    if budgets is None:
        budgets = np.full(len(input_ids), max_new_tokens)
    budgets = np.minimum(np.asarray(budgets, np.int32), max_new_tokens)
    ids = place_rows(np.asarray(input_ids, np.int32), mesh)
    args = (
        graphdef,
        state,
        layer_params,
        ids,
        place_rows(np.asarray(attention_mask, np.int32), mesh),
        eos,
        jnp.int32(pad_token_id),
        place_rows(budgets, mesh),
        int(max_new_tokens),
        jax.random.key(seed),
        jnp.float32(max(temperature, 1e-6)),
    )
    sample = temperature > 0
    program = (ids.shape, str(ids.sharding), int(max_new_tokens), sample)
    if shrink is None:  # the per-row cost of a step that shrinking saves is CPU's
        shrink = on_one_cpu(mesh)
    stop_at = shrunk_size(len(input_ids)) if shrink else 0
    options = {"sample": sample, "stop_at": jnp.int32(stop_at), "steps": jnp.int32(SHRINK_MIN_STEPS)}
    return DecodingCall(args, options, program)


def compile_decoding(calls: list[DecodingCall]) -> None:
    """Compile the decoding programs of `calls` (from `decoding_call`) side by side, so the
    calls that follow find them compiled.

    A batched generation runs one program per batch shape (16 rows and a short last batch
    of 4, say). Compiling one while the next lowers, and alongside it, takes SmolLM2's two
    unrolled programs from 5.5-6.4 s to 4.5-6.1 s (three fresh processes each). Compiling
    is thread-safe in jax, and what compiles is exactly what the calls would run (same
    placed arguments, lowered in the caller's thread), so results do not change. Shapes
    already compiled cost a cache lookup."""
    by_shape = {}
    for call in calls:
        by_shape.setdefault(call.program, call)
    if len(by_shape) < 2:
        return  # one program compiles at its first call, with nothing to overlap
    # Each program is lowered here, then compiled on a worker while the next one lowers:
    # tracing reads this thread's jax context (the evaluation's default_matmul_precision,
    # a mesh), which a worker would not see, and a program lowered without it is not the
    # one the calls look up.
    with ThreadPoolExecutor(min(len(by_shape), os.cpu_count() or 1)) as pool:
        for done in [pool.submit(_greedy.lower(*c.args, **c.options).compile) for c in by_shape.values()]:
            done.result()


def strip_after_eos(tokens: np.ndarray, eos_token_ids) -> list[list[int]]:
    """Per row, the generated ids up to (not including) the first EOS."""
    eos = set(np.atleast_1d(eos_token_ids).tolist())
    rows = []
    for row in tokens.tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def encode_prompts(tokenizer, prompts: list[str], chat: bool = False, round_width: bool = False):
    """Left-padded (ids, mask, pad_id) for generation; chat applies the chat template.

    round_width pads to the next power of two, so repeated calls compile few shapes."""
    from ..data.eval_sets import left_pad
    from ..data.tokenize import pad_token_id

    if chat:
        prompts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
    pad_id = pad_token_id(tokenizer)
    encoded = [np.asarray(e, np.int32) for e in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    width = max(len(e) for e in encoded)
    if round_width:
        width = 1 << (width - 1).bit_length()
    ids, mask = left_pad(encoded, pad_id, width)
    return ids, mask, pad_id
