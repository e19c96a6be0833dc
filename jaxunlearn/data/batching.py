"""Paired streams and fixed-shape, resumable batches for the unlearning loop (SPEC section 1).

Every forget index i carries up to five rows: forget (q_f, a_f), retain (q_r, a_r),
forget_idk (q_f, idk), retain_idk (q_r, idk) and forget_mismatch (q_f, a_r). The retain
row and the refusal string of i come from a generator seeded per index, so the pairing is
identical every epoch and every run; the paper's rule
`retain_idx = (i + randint(len(retain))) % len(retain)` is kept. Two generators:
"seeded" (numpy's PCG64 seeded by (train.seed, i)) and "closer_look", the paper code's
exact draws: `torch.manual_seed(i)` then randint for the retain offset and randint for the
refusal. Torch's CPU generator is MT19937 with the reference seeding, and randint over
n < 2**32 values takes one raw 32-bit output modulo n; numpy's legacy MT19937 seeding
gives the same outputs without torch.

Batch order is an endless stream of per-epoch permutations seeded by (seed, epoch): step s
takes positions [s*B, (s+1)*B) of it. The iterator's whole state is the step number, so a
saved-and-restored iterator continues exactly, and on several JAX processes each process
pads only its slice of the global batch.
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np

from ..errors import DataError
from .streams import STREAM_SOURCES, STREAMS, needs_refusals, needs_retain
from .tokenize import IGNORE, TokenizedRows, encode_qa

DEFAULT_BUCKETS = (64, 128, 256, 512)


@dataclasses.dataclass(frozen=True)
class Pairing:
    retain_index: np.ndarray  # [n_forget]
    refusal_index: np.ndarray  # [n_forget]


PAIRINGS = ("seeded", "closer_look")


def _torch_randint_draws(index: int, count: int) -> np.ndarray:
    """The first `count` raw 32-bit outputs of torch's CPU generator after manual_seed(index)."""
    return np.random.RandomState(index).randint(0, 2**32, size=count, dtype=np.uint32)


def draw_pairing(n_forget: int, n_retain: int, n_refusals: int, seed: int, rule: str = "seeded") -> Pairing:
    if rule not in PAIRINGS:
        raise DataError(f"unknown pairing {rule!r}; use one of {', '.join(PAIRINGS)}")
    retain, refusal = np.zeros(n_forget, np.int64), np.zeros(n_forget, np.int64)
    for i in range(n_forget):
        if rule == "closer_look":  # torch.manual_seed(i); randint(n_retain); randint(n_refusals)
            first, second = (int(x) for x in _torch_randint_draws(i, 2))
            retain[i] = (i + first % n_retain) % n_retain if n_retain else 0
            refusal[i] = second % n_refusals if n_refusals else 0
            continue
        rng = np.random.default_rng((seed, i))
        retain[i] = (i + rng.integers(n_retain)) % n_retain if n_retain else 0
        refusal[i] = rng.integers(n_refusals) if n_refusals else 0
    return Pairing(retain, refusal)


def expected_output(row: dict, refusal: str) -> str:
    """What a flagged row should have answered (Chen et al.): its `expected` field, the
    reference answer when it was flagged as hallucinated, else a refusal."""
    if row.get("expected"):
        return str(row["expected"])
    if row.get("category") == "hallucinated" and row.get("reference"):
        return str(row["reference"])
    return refusal


def build_streams(
    tokenizer,
    template,
    forget: list[dict],
    retain: list[dict] | None,
    refusals: list[str] | None,
    streams: tuple[str, ...],
    max_length: int,
    seed: int,
    pairing: str = "seeded",
) -> dict[str, TokenizedRows]:
    """Tokenize only the streams the objective needs, one row per forget index."""
    unknown = [s for s in streams if s not in STREAMS]
    if unknown:
        raise DataError(f"unknown stream(s) {unknown}; known: {', '.join(STREAMS)}")
    if not forget:
        raise DataError("the forget set is empty; check the split name or the file")
    if needs_retain(streams) and not retain:
        raise DataError(f"streams {needs_retain(streams)} need a retain set, but it is empty")
    if needs_refusals(streams) and not refusals:
        raise DataError(
            f"streams {needs_refusals(streams)} need refusal strings (idontknow.jsonl), but none were given"
        )
    pairing = draw_pairing(len(forget), len(retain or []), len(refusals or []), seed, pairing)
    paired_retain = [retain[j] for j in pairing.retain_index] if needs_retain(streams) else []
    texts = {  # source -> (questions, answers) per forget index
        "forget": ([r["question"] for r in forget], [r["answer"] for r in forget]),
        "retain": ([r["question"] for r in paired_retain], [r["answer"] for r in paired_retain]),
        "refusal": ([], [refusals[k] for k in pairing.refusal_index] if refusals else []),
    }
    if "expected" in {STREAM_SOURCES[s][1] for s in streams}:
        texts["expected"] = ([], [expected_output(r, texts["refusal"][1][i]) for i, r in enumerate(forget)])
    out = {}
    for s in streams:
        question_from, answer_from = STREAM_SOURCES[s]
        out[s] = encode_qa(
            tokenizer, template, texts[question_from][0], texts[answer_from][1], max_length=max_length, what=s
        )
    return out


def bucket_length(longest: int, buckets: tuple[int, ...] | None, pad_to: int | None) -> int:
    """The padded length: a fixed `pad_to`, else the smallest bucket that fits."""
    if pad_to is not None:
        if longest > pad_to:
            raise DataError(f"a row of {longest} tokens does not fit pad_to={pad_to}; raise pad_to or max_length")
        return pad_to
    buckets = tuple(sorted(buckets or DEFAULT_BUCKETS))
    k = bisect.bisect_left(buckets, longest)
    if k == len(buckets):
        raise DataError(f"a row of {longest} tokens exceeds the largest bucket {buckets[-1]}; add a bucket")
    return buckets[k]


def pad_rows(rows: TokenizedRows, index, length: int, pad_id: int, left: bool = False) -> dict[str, np.ndarray]:
    """input_ids / attention_mask / labels, int32 [len(index), length]."""
    n = len(index)
    ids = np.full((n, length), pad_id, np.int32)
    mask = np.zeros((n, length), np.int32)
    labels = np.full((n, length), IGNORE, np.int32)
    for row, i in enumerate(index):
        x, y = rows.ids[i], rows.labels[i]
        sl = slice(length - len(x), length) if left else slice(0, len(x))
        ids[row, sl], mask[row, sl], labels[row, sl] = x, 1, y
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class BatchIterator:
    """Endless, seeded, resumable batches over paired streams (all of one length per step)."""

    def __init__(
        self,
        streams: dict[str, TokenizedRows],
        global_batch_size: int,
        seed: int,
        pad_id: int,
        buckets: tuple[int, ...] | None = DEFAULT_BUCKETS,
        pad_to: int | None = None,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if not streams:
            raise DataError("no streams to batch")
        sizes = {name: len(rows) for name, rows in streams.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"streams must be paired row for row, got sizes {sizes}")
        if global_batch_size % process_count:
            raise DataError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
        self.streams = streams
        self.n = next(iter(sizes.values()))
        self.batch_size = global_batch_size
        self.seed = seed
        self.pad_id = pad_id
        self.buckets = buckets
        self.pad_to = pad_to
        self.shuffle = shuffle
        self.process_index = process_index
        self.process_count = process_count
        self.step = 0
        self._orders: dict[int, np.ndarray] = {}
        self._longest = np.max([rows.lengths() for rows in streams.values()], axis=0)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if self.shuffle:
                self._orders[epoch] = np.random.default_rng((self.seed, epoch, 7)).permutation(self.n)
            else:
                self._orders[epoch] = np.arange(self.n)
            self._orders.pop(epoch - 2, None)
        return self._orders[epoch]

    def global_indices(self, step: int) -> np.ndarray:
        positions = step * self.batch_size + np.arange(self.batch_size)
        return np.array([self.epoch_order(p // self.n)[p % self.n] for p in positions])

    def batch_at(self, step: int) -> dict[str, dict[str, np.ndarray]]:
        index = self.global_indices(step)
        length = bucket_length(int(self._longest[index].max()), self.buckets, self.pad_to)
        per = self.batch_size // self.process_count
        local = index[self.process_index * per : (self.process_index + 1) * per]
        return {name: pad_rows(rows, local, length, self.pad_id) for name, rows in self.streams.items()}

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, dict[str, np.ndarray]]:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def epoch_of(self, step: int) -> float:
        return step * self.batch_size / self.n

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "n": self.n, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        for key in ("seed", "n", "batch_size"):
            if state.get(key) != mine[key]:
                raise DataError(
                    f"cannot resume the data iterator: saved {key}={state.get(key)} but this run has {mine[key]}; "
                    "resume with the same data and batch settings"
                )
        self.step = int(state["step"])
