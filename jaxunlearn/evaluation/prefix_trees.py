"""Scoring rows that share token prefixes as prefix trees packed into fixed-width sequences.

TOFU scores every question's answer, paraphrase and perturbed answers after the same
prompt, perturbed answers share their first words, and every prompt starts with the same
chat preamble. Scored whole, each row recomputes those prefixes and pads to a bucket.
Here the rows, sorted by their tokens so that rows with common prefixes sit together, are
merged into prefix trees, one node per distinct prefix, filled into sequences of one width
(a new sequence when the next row's new nodes do not fit). Each sequence runs through the
model once with a mask that lets every node attend to its ancestors and itself, at
position = its depth, so a node's hidden state is that of every row through it. A node's
token is scored from its parent's logits, the LM head runs at the scored tokens' parents only, and the
nodes of the `full` rows also get the memorization and Min-K%++ statistics, the others a
logsumexp and a gather. TOFU forget10, 20 questions: 4.3k tree nodes in place of 9.0k row
tokens. The log-probs are those of whole-row scoring up to float rounding.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..data.batching import bucket_length
from ..data.tokenize import TokenizedRows
from ..models import vocab_head
from ..parallel import batch_ways, host_get, place_rows
from .kernels import RowScores, batch_mesh, padded_batch, round_up, supervised_tokens, token_statistics

# Sequence widths and full-statistics counts pad to these (few compiled shapes).
LENGTH_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
MIN_WIDTH = 256  # the narrowest width tried: below it a sequence holds too few questions' trees to share much
MAX_WIDTH = 4096  # the widest tried (a longer row gets its own bucket)
WIDTHS_TRIED = 4  # MIN_WIDTH-or-the-longest-row's bucket, then doublings
# On CPU the masked softmax over a sequence's [W, W] scores costs about as much as the two
# attention matmuls (SmolLM2: widths 128 / 512 / 1024 measured 1.00 / 1.10 / 1.50 per token)
ATTENTION_WEIGHT = 2.0
# The LM head's vocabulary block for scoring: its log-partition runs online over blocks of
# about this many columns (SmolLM2: 6 of 8,192), so no [rows, V] logits are written and
# read back (the benchmark's 140 candidates: 5.44-5.53 -> 5.18-5.24 s warm on 2 CPU cores)
HEAD_BLOCK = 8192
# Attention runs in blocks of this many queries, each against the slots up to its own end:
# a node's ancestors come before it, so nothing above the diagonal is needed (30 layers'
# attention at 2 x 512 slots: 411 -> 266 ms; the benchmark's scoring about 3% faster)
QUERY_BLOCK = 128
TOKENS_PER_ROW = 64  # `batch_size` counts rows of this many tokens: a batch holds batch_size * 64 tree nodes


@dataclasses.dataclass
class PackedTrees:
    """Prefix trees in sequences [P, W]: node tokens, depths, parent slots (-1 at a root or an
    unused slot), and the nodes used in each; per row, its sequence and the slot of each of
    its tokens."""

    ids: np.ndarray
    depth: np.ndarray
    parent: np.ndarray
    nodes: np.ndarray  # [P]
    row_sequence: np.ndarray  # [N]
    row_slots: list[np.ndarray]  # [N] int arrays, one slot per token of the row

    @classmethod
    def build(cls, rows: TokenizedRows, width: int, pad_id: int) -> "PackedTrees":
        if len(rows) and int(rows.lengths().max()) > width:
            raise ValueError(f"a row of {int(rows.lengths().max())} tokens does not fit sequences of {width}")
        ids, depth, parent = [], [], []
        row_sequence, row_slots = np.zeros(len(rows), np.int64), [None] * len(rows)
        children: dict[tuple[int, int], int] = {}
        for r in sorted(range(len(rows)), key=lambda r: rows.ids[r].tolist()):
            row = rows.ids[r].tolist()
            if not ids or _new_nodes(children, row) > width - len(ids[-1]):
                for column in (ids, depth, parent):
                    column.append([])
                children = {}
            slots, up = [], -1
            for d, tok in enumerate(row):
                slot = children.get((up, tok))
                if slot is None:
                    slot = children[(up, tok)] = len(ids[-1])
                    ids[-1].append(tok)
                    depth[-1].append(d)
                    parent[-1].append(up)
                slots.append(slot)
                up = slot
            row_sequence[r], row_slots[r] = len(ids) - 1, np.asarray(slots, np.int64)
        return cls(
            _pad(ids, width, pad_id),
            _pad(depth, width, 0),
            _pad(parent, width, -1),
            np.array([len(x) for x in ids], np.int64),
            row_sequence,
            row_slots,
        )

    def ancestors(self, sequence: int) -> np.ndarray:
        """[W, W] bool: slot i sees slot j when j is i or one of i's ancestors."""
        parent = self.parent[sequence]
        seen = np.eye(len(parent), dtype=bool)
        for i, p in enumerate(parent):  # parents come before their children
            if p >= 0:
                seen[i] |= seen[p]
        return seen


def slot_cost(config, width: int) -> float:
    """Estimated FLOPs of one sequence slot through the layers at `width`: the dense
    projections (2 per weight) and the attention over `width` keys (QK and PV, weighted by
    ATTENTION_WEIGHT). Machine-independent: the choice it drives holds on any CPU or chip
    where matmul FLOPs dominate."""
    c = config
    attn_dims = c.num_heads * c.head_dim
    dense = 2 * (2 * c.hidden_size * attn_dims + 2 * c.hidden_size * c.num_kv_heads * c.head_dim)
    dense += 2 * (3 if c.arch.mlp == "gated" else 2) * c.hidden_size * c.intermediate_size
    return c.num_layers * (dense + ATTENTION_WEIGHT * 4 * width * attn_dims)


def choose_trees(rows: TokenizedRows, pad_id: int, config, width: int | None = None) -> PackedTrees:
    """Rows packed at `width`, or at the width of least estimated compute (slots x
    `slot_cost`): wider sequences share more (a prompt common to many rows, such as few-shot
    examples, is computed once per sequence) but pay more attention per slot. Widths tried:
    the bucket of max(longest row, MIN_WIDTH) and its doublings up to MAX_WIDTH."""
    if width:
        return PackedTrees.build(rows, width, pad_id)
    longest = int(rows.lengths().max()) if len(rows) else 1
    first = bucket_length(max(longest, MIN_WIDTH), LENGTH_BUCKETS, None)
    widths = [first] + [first << k for k in range(1, WIDTHS_TRIED) if first << k <= MAX_WIDTH]
    best, best_cost = None, float("inf")
    for w in widths:
        trees = PackedTrees.build(rows, w, pad_id)
        cost = len(trees.ids) * w * slot_cost(config, w)
        if cost < best_cost:
            best, best_cost = trees, cost
    return best


def _new_nodes(children: dict, row: list[int]) -> int:
    """Nodes a row would add to a tree: its tokens after the longest prefix already there."""
    up = -1
    for d, tok in enumerate(row):
        up = children.get((up, tok), -2)
        if up == -2:
            return len(row) - d
    return 0


def _pad(parts: list[list[int]], width: int, fill: int) -> np.ndarray:
    out = np.full((len(parts), width), fill, np.int32)
    for i, x in enumerate(parts):
        out[i, : len(x)] = x
    return out


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _score_sequences(graphdef, params, b: dict):
    """Per scored slot (`scored`, -1: padding) the log-prob of its token given its
    ancestors; memorization and Min-K%++ statistics at `full_at` (indices into `scored`).
    The LM head runs at the scored slots' parents only: a multiple-choice question's long
    prompt goes through the layers but not through the vocabulary-wide head."""
    model = nnx.merge(graphdef, params)
    slots = jnp.maximum(b["scored"], 0)
    parents = jnp.take_along_axis(b["parent"], slots, axis=1)
    width = b["ids"].shape[1]
    head = model.forward(
        b["ids"],
        b["seen"],
        positions=b["depth"],
        logits_to_keep=jnp.maximum(parents, 0),
        vocab_chunk=HEAD_BLOCK,
        query_blocks=width // QUERY_BLOCK if width % QUERY_BLOCK == 0 else 1,
    ).head
    targets = jnp.take_along_axis(b["ids"], slots, axis=1)
    # log p(target) at every scored slot from the blockwise log-partition and the target's
    # own column, never the whole [B, slots, V] logits; those only at the `full_at` slots
    log_partition = vocab_head.log_partition(head)
    token_logp = jnp.where(b["scored"] >= 0, head.target_logits(targets) - log_partition, 0.0)
    at = jnp.maximum(b["full_at"], 0)
    full = token_statistics(
        head.replace(hidden=jnp.take_along_axis(head.hidden, at[..., None], axis=1)).logits(),
        jnp.take_along_axis(targets, at, axis=1),
        b["full_at"] >= 0,
        full_stats=True,
        log_partition=jnp.take_along_axis(log_partition, at, axis=1),
    )
    return {"token_logp": token_logp, **{k: full[k] for k in ("mu", "sigma", "correct", "clear")}}


def score_prefix_trees(
    model,
    rows: TokenizedRows,
    pad_id: int,
    full: np.ndarray,
    batch_size: int = 16,
    mesh=None,
    progress=None,
    width: int | None = None,
) -> RowScores:
    """Every row's supervised-token log-probs, each shared prefix computed once; the rows
    where `full` is set also get the memorization and Min-K%++ statistics (the others come
    back with zeros there), as `score_rows` gives them. Sequences are `width` wide (default:
    the width of least estimated compute, `choose_trees`); a batch holds batch_size *
    TOKENS_PER_ROW slots, rounded up to the ways the mesh splits a batch (`mesh`, by default
    the one the parameters span)."""
    full = np.asarray(full, bool)
    trees = choose_trees(rows, pad_id, model.config, width)
    width = trees.ids.shape[1]
    mesh = batch_mesh(model, mesh)
    multiple = batch_ways(mesh)
    per_batch = round_up(max(1, batch_size * TOKENS_PER_ROW // width), multiple)
    members = [np.flatnonzero(trees.row_sequence == s) for s in range(len(trees.ids))]
    scored = [trees.row_slots[r][supervised_tokens(rows, r)] for r in range(len(rows))]  # slots of supervised tokens
    # per sequence, the sorted slots scored (the head runs there) and, among them, those
    # that need full statistics
    none = np.zeros(0, np.int64)
    scored_slots = [np.unique(np.concatenate([none] + [scored[r] for r in members[s]])) for s in range(len(trees.ids))]
    full_at = [
        np.searchsorted(scored_slots[s], np.unique(np.concatenate([none] + [scored[r] for r in members[s] if full[r]])))
        for s in range(len(trees.ids))
    ]
    # the head's rows per sequence: one shape per call, in eighths of the width (443 of 512
    # scored: 448 rows, not the next length bucket's 512)
    width_scored = min(width, round_up(max([1, *(len(x) for x in scored_slots)]), max(1, width // 8)))
    count = bucket_length(max([1, *(len(x) for x in full_at)]), LENGTH_BUCKETS, None)
    graphdef, params = nnx.split(model)
    out = {k: [None] * len(rows) for k in ("token_logp", "correct", "mu", "sigma", "clear")}
    for start in range(0, len(trees.ids), per_batch):
        batch = list(range(start, min(start + per_batch, len(trees.ids))))
        size = padded_batch(len(batch), per_batch, multiple)
        a = {
            "ids": trees.ids[batch],
            "depth": trees.depth[batch],
            "parent": trees.parent[batch],
            "seen": np.stack([trees.ancestors(s) for s in batch]),
            "scored": _pad([scored_slots[s] for s in batch], width_scored, -1),
            "full_at": _pad([full_at[s] for s in batch], count, -1),
        }
        a = {k: np.concatenate([v, np.repeat(v[-1:], size - len(batch), axis=0)]) for k, v in a.items()}
        res = host_get(_score_sequences(graphdef, params, {k: place_rows(v, mesh) for k, v in a.items()}))
        for j, s in enumerate(batch):
            for r in members[s]:
                at = np.searchsorted(scored_slots[s], scored[r])  # the row's tokens among the scored slots
                out["token_logp"][r] = res["token_logp"][j][at].astype(np.float64)
                if full[r]:
                    k = np.searchsorted(full_at[s], at)  # their places among the full ones
                    out["mu"][r] = res["mu"][j][k].astype(np.float64)
                    out["sigma"][r] = res["sigma"][j][k].astype(np.float64)
                    out["correct"][r] = res["correct"][j][k]
                    out["clear"][r] = res["clear"][j][k]
                else:
                    out["mu"][r] = out["sigma"][r] = np.zeros(len(at))
                    out["correct"][r] = out["clear"][r] = np.zeros(len(at), bool)
            if progress is not None:
                progress.update(len(members[s]))
    return RowScores(**out)
