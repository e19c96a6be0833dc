"""Memory plan for 7B-8B unlearning: the compiled NPO+GD step's bytes per device.

    python benchmarks/memory.py                                # full grid
    python benchmarks/memory.py --models llama2-7b --devices 8 --seq 512

The step (policy forward+backward on forget and retain, frozen reference forward, AdamW)
is lowered on abstract arrays (nothing is allocated) over a mesh of fake CPU devices
(`--xla_force_host_platform_device_count`) with parameters, optimizer state and the
reference sharded FSDP-style over every device, and compiled; XLA's
`memory_analysis()` gives the bytes per device: arguments (parameters, AdamW moments,
reference, batch), temporaries (activations, gradients) and outputs not aliased to donated
inputs. Policies: mixed (what the 7B / 8B presets run: fp32 parameters and AdamW moments,
bf16 compute on a cast copy, bf16 reference), fp32 (fp32 parameters and compute) and
bf16 (bf16 parameters, moments, reference and compute: an opt-in, it barely trains at
small learning rates), lora (`--lora-rank r`: a bf16 base, fp32 adapters of rank r on every
projection with their AdamW moments, the reference = the base with adapters off, no second
copy); remat none or full (per block); `--vocab-blocks 0 16384` compares whole [B, T, V]
logits with the blockwise LM head (train.vocab_block, the default). The CPU compiler's buffer plan
approximates the GPU/TPU ones (fusion differs), so treat the fit table as a plan with
about 10% slack, not as a promise.

    python benchmarks/memory.py --target tpu-v5e-8 --devices 8 --models llama3-8b --policies bfloat16 lora

compiles for a TPU topology instead (deviceless, ahead of time: needs `pip install
libtpu` at the version the installed jax[tpu] pins, no TPU): the TPU compiler's own buffer
assignment, with splash attention, and its own fit check, which refuses a step larger
than the chip's HBM (the row then says so under `refused`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MODELS = {  # HF config fields
    "llama2-7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
    "llama3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
        rope_theta=500000.0,
    ),
    "llama3-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
        rope_theta=500000.0,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=False,
    ),
}
CHIPS = {"80 GB GPU (H100/A100)": 80e9, "TPU v4 (32 GiB)": 32 * 2**30, "TPU v5e (16 GiB)": 16 * 2**30}


# TPU topologies a plan may be compiled for without the chips (deviceless AOT through libtpu):
# name -> (chips, jax.experimental.topologies.get_topology_desc arguments); hosts of 2 x 2 chips
TPU_TOPOLOGIES = {
    "tpu-v5e-8": (8, dict(topology_name="v5e:2x4", chip_config_name="default", chips_per_host_bounds=(2, 2, 1))),
    "tpu-v5e-16": (16, dict(topology_name="v5e:4x4", chip_config_name="default", chips_per_host_bounds=(2, 2, 1))),
    "tpu-v4-8": (4, dict(topology_name="v4:2x2x1", chip_config_name="megacore", chips_per_host_bounds=(2, 2, 1))),
    "tpu-v6e-8": (8, dict(topology_name="v6e:2x4", chip_config_name="default", chips_per_host_bounds=(2, 2, 1))),
}


def libtpu_requirement() -> str:
    """The libtpu the installed jax's `tpu` extra pins (e.g. libtpu==0.0.42.*)."""
    from importlib.metadata import requires

    pins = [r.split(";")[0].strip() for r in requires("jax") or [] if r.startswith("libtpu") and "tpu" in r]
    return pins[0].replace(" ", "") if pins else "libtpu"


def target_devices(target: str, count: int) -> list:
    """`count` devices to plan on: fake CPU devices, or the chips of a TPU topology, for
    which XLA's TPU compiler (libtpu, the version jax[tpu] pins) compiles here without a
    TPU, so the plan is the chip's own buffer assignment and fit check."""
    import jax

    if target == "cpu":
        return jax.devices()[:count]
    chips, topology = TPU_TOPOLOGIES[target]
    if count != chips:
        raise SystemExit(f"--target {target} has {chips} devices; pass --devices {chips}")
    try:
        from jax.experimental.topologies import get_topology_desc

        return list(get_topology_desc(platform="tpu", num_slices=1, **topology).devices)
    except Exception as e:  # no libtpu, or one that does not match the pinned jax
        raise SystemExit(
            f"--target {target} needs the TPU compiler: pip install '{libtpu_requirement()}' (the version the "
            f"installed jax's tpu extra pins; it compiles without a TPU). {type(e).__name__}: {e}"
        ) from None


def plan(
    model: str,
    devices: int,
    policy: str,
    remat: str,
    batch_per_device: int,
    seq: int,
    rank: int = 16,
    vocab_block: int = 16384,
    target: str = "cpu",
) -> dict:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import jaxunlearn
    from jaxunlearn.models.lora import add_lora, split_adapters
    from jaxunlearn.models.registry import family_for
    from jaxunlearn.objectives import StepBatch, build_objective
    from jaxunlearn.parallel import make_mesh
    from jaxunlearn.training.step import (
        batch_sharding,
        init_state,
        jit_train_step,
        make_train_step,
        param_shardings,
        state_shardings,
    )

    hf = dict(
        MODELS[model],
        model_type="llama",
        rms_norm_eps=1e-5,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        hidden_act="silu",
    )
    config = family_for("llama").config_from_hf(hf)
    param_dtype, compute_dtype = {"mixed": ("float32", "bfloat16"), "lora": ("bfloat16", "bfloat16")}.get(
        policy, (policy, policy)
    )
    attention = "splash" if target.startswith("tpu") else config.attention  # the kernel a TPU run dispatches to
    config = dataclasses.replace(
        config, param_dtype=param_dtype, compute_dtype=compute_dtype, remat=remat, attention=attention
    )
    mesh = make_mesh(data=1, fsdp=devices, tensor=1, devices=target_devices(target, devices))

    def abstract(tree):
        return jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, param_shardings(tree, mesh)
        )

    if policy == "lora":  # the state trains the adapters; the frozen bf16 base is the step's second argument
        targets = ["q", "k", "v", "o", "gate", "up", "down"]
        lora_model = nnx.eval_shape(lambda: add_lora(jaxunlearn.create_model(config), rank, 16.0, targets))
        graphdef, params, base = split_adapters(lora_model)
        n_frozen = sum(x.size for x in jax.tree.leaves(base))
        shardings = param_shardings(params, mesh)
        params, reference = abstract(params), abstract(base)
    else:
        graphdef, params = nnx.split(nnx.eval_shape(lambda: jaxunlearn.create_model(config)))
        shardings = param_shardings(params, mesh)
        params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), params, shardings)
        n_frozen = 0
    tx = optax.adamw(1e-5, weight_decay=0.01)
    state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        jax.eval_shape(lambda p: init_state(p, tx, 0), params),
        state_shardings(params, tx, mesh),
    )
    if policy != "lora":
        reference = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, jnp.dtype(compute_dtype), sharding=x.sharding), params
        )
    objective = build_objective("NPO+GD")
    b = batch_per_device * devices
    tokens = jax.ShapeDtypeStruct((b, seq), jax.numpy.int32, sharding=batch_sharding(mesh))
    batch = StepBatch.from_arrays(
        {s: {"input_ids": tokens, "attention_mask": tokens, "labels": tokens} for s in ("forget", "retain")}
    )
    cast = dict(compute_dtype=jnp.bfloat16, param_shardings_tree=shardings) if policy == "mixed" else {}
    cast = dict(lora=True) if policy == "lora" else cast
    step_fn = make_train_step(graphdef, objective, tx, lambda _: 1e-5, vocab_block=vocab_block, **cast)
    step = jit_train_step(step_fn, state, reference, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(params)) + n_frozen
    row = {
        "model": model,
        "params_B": n_params / 1e9,
        "devices": devices,
        "policy": f"lora r{rank}" if policy == "lora" else policy,
        "remat": remat,
        "vocab_block": vocab_block,
        "batch_per_device": batch_per_device,
        "seq": seq,
        "target": target,
    }
    t = time.perf_counter()
    try:
        with jax.set_mesh(mesh):  # as the training loop runs it
            m = step.lower(state, reference, batch).compile().memory_analysis()
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        # a TPU compiler refuses a step larger than the chip's HBM: that is the answer
        refused = str(e).split("RESOURCE_EXHAUSTED:")[-1].strip().splitlines()[0]
        return {**row, "refused": refused, "compile_s": time.perf_counter() - t}
    total = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
    return {
        **row,
        "arguments_GiB": m.argument_size_in_bytes / 2**30,
        "temp_GiB": m.temp_size_in_bytes / 2**30,
        "total_GiB": total / 2**30,
        "compile_s": time.perf_counter() - t,
        **{chip: "yes" if total <= cap else "no" for chip, cap in CHIPS.items()},
    }


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["llama2-7b", "llama3-8b"], choices=sorted(MODELS))
    p.add_argument("--devices", nargs="+", type=int, default=[1, 8, 64])
    p.add_argument(
        "--policies",
        nargs="+",
        default=["mixed", "float32", "bfloat16"],
        choices=["mixed", "float32", "bfloat16", "lora"],
    )
    p.add_argument("--lora-rank", type=int, default=16, help="adapter rank of the lora policy")
    p.add_argument("--remat", nargs="+", default=["none", "full"], choices=["none", "full", "dots"])
    p.add_argument(
        "--vocab-blocks",
        nargs="+",
        type=int,
        help="train.vocab_block values to plan (0: whole [B, T, V] logits; default: the config's)",
    )
    p.add_argument("--batch-per-device", type=int, default=1, help="rows per stream per device")
    p.add_argument("--seq", type=int, default=512, help="padded length (TOFU's max_length is 500)")
    p.add_argument(
        "--target",
        default="cpu",
        choices=["cpu", *TPU_TOPOLOGIES],
        help="compile for fake CPU devices (default) or for a TPU topology without the chips (needs libtpu)",
    )
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)
    if args.target != "cpu":
        os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")  # no metadata server: a deviceless compile
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:  # must precede the first jax import
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={max(args.devices)}".strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import common
    from tqdm.auto import tqdm

    from jaxunlearn.training.config import TrainSection

    blocks = args.vocab_blocks or [TrainSection().vocab_block]
    grid = [
        (m, d, pol, r, vb)
        for m in args.models
        for d in args.devices
        for pol in args.policies
        for r in args.remat
        for vb in blocks
    ]
    rows = []
    for m, d, pol, r, vb in tqdm(grid, desc="compile", unit="plan"):
        rows.append(plan(m, d, pol, r, args.batch_per_device, args.seq, args.lora_rank, vb, args.target))
    print(
        f"\nNPO+GD step, {args.batch_per_device} row(s) per stream per device x {args.seq} tokens, "
        f"FSDP over all devices; bytes per device, compiled for {args.target}"
    )
    print(
        common.table(
            rows,
            ["model", "devices", "policy", "remat", "vocab_block", "arguments_GiB", "temp_GiB", "total_GiB", *CHIPS]
            + (["refused"] if any("refused" in r for r in rows) else []),
        )
    )
    common.write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
