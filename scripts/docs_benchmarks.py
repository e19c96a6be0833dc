"""The tables of docs/benchmarks.md and the README's speed line, generated from
benchmarks/results.json (written by benchmarks/run_all.py): each sits between
`<!-- results: NAME -->` and `<!-- /results -->` markers and is replaced as a whole.

    python scripts/docs_benchmarks.py           # exit 1 if the docs' tables are stale
    python scripts/docs_benchmarks.py --write   # rewrite them
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.json"
PAGES = (REPO / "docs" / "benchmarks.md", REPO / "README.md")
sys.path.insert(0, str(REPO / "benchmarks"))
import common  # noqa: E402  (environment_line, ratio_range)


def _f(x, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def train_table(entries: dict) -> str:
    lines = [
        "| command | jaxunlearn s/step | PyTorch s/step | speed ratio | per-round range | peak RSS jax / torch (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        if not name.startswith("train_step"):
            continue
        r = e["result"]
        j, t = r["rows"]
        peak = f"{j['peak_MiB']:.0f} / {t['peak_MiB']:.0f}" if "peak_MiB" in j else "—"
        lines.append(
            f"| `{e['command']}` | {_f(j['s_per_step'])} | {_f(t['s_per_step'])} | **{r['speedup']:.2f}x** | "
            f"{j.get('spread', '—')} vs {t.get('spread', '—')} | {peak} |"
        )
    return "\n".join(lines)


def eval_table(entries: dict) -> str:
    lines = [
        "| command | phase | jaxunlearn s | transformers s | speed ratio | per-round range |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        if not name.startswith("eval"):
            continue
        r = e["result"]
        for row in r["phases"]:
            lines.append(
                f"| `{e['command']}` | {row['phase']} | {_f(row['jaxunlearn_s'])} | {_f(row['transformers_s'])} | "
                f"**{row['speedup']:.2f}x** | {row.get('speedup_range', '—')} |"
            )
        lines.append(
            f"| | outputs | max avg-NLL difference {r['max_abs_avg_nll_diff']:.1e} | identical answers "
            f"{r['identical_generations']} | | |"
        )
    return "\n".join(lines)


def choice_table(entries: dict) -> str:
    lines = [
        "| command | jaxunlearn s (warm / cold) | lm-eval HF s | speed ratio | per-round range | accuracy (both) |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        if not name.startswith("choice"):
            continue
        r = e["result"]
        same = "" if r["acc_jaxunlearn"] == r["acc_lm_eval"] else f" vs {r['acc_lm_eval']:.3f} (DIFFERENT)"
        lines.append(
            f"| `{e['command']}` | {_f(r['jaxunlearn_s'])} / {_f(r['jaxunlearn_cold_s'])} | {_f(r['lm_eval_hf_s'])} | "
            f"**{r['speedup']:.2f}x** | {common.ratio_range(r['times']['jaxunlearn'], r['times']['lm-eval HF'])} | "
            f"{r['acc_jaxunlearn']:.3f}{same} |"
        )
    return "\n".join(lines)


def floor_ceilings(entries: dict) -> dict[str, dict]:
    """Per eval entry bounded by the floor entry: its case, floors, and the ceiling ratios
    against that eval entry's transformers time in this same results file."""
    out = {}
    for name, e in entries.items():
        if not name.startswith("floor"):
            continue
        for case, row in e["result"]["cases"].items():
            eval_entry = entries.get(row["eval_entry"])
            warm = common.warm_total(eval_entry["result"]) if eval_entry else None
            theirs = (
                (warm["transformers_s"], warm["speedup"]) if warm else (row["transformers_s"], row["measured_ratio"])
            )
            out[row["eval_entry"]] = {**row, "case": case, **common.ceilings(row, *theirs)}
    return out


def floor_table(entries: dict) -> str:
    lines = [
        "| eval entry | answers | products TFLOP | floor s at XLA's / PyTorch's rates | transformers s "
        "| ceiling ratio at XLA's / PyTorch's rates | measured ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry, row in floor_ceilings(entries).items():
        ceilings = " / ".join(
            "—" if row[f"{fw}_ceiling"] is None else f"{row[f'{fw}_ceiling']:.2f}x" for fw in ("xla", "torch")
        )
        measured = "—" if row["measured_ratio"] is None else f"{row['measured_ratio']:.2f}x"
        lines.append(
            f"| `{entry}` | {row['case']} | {_f(row['work_TFLOP'])} | {_f(row['xla_floor_s'])} / "
            f"{_f(row['torch_floor_s'])} | {_f(row['transformers_s'])} | **{ceilings}** | {measured} |"
        )
    for name, e in entries.items():
        if name.startswith("floor"):
            every, one = e["result"]["GFLOP_per_s"]["all_cores"], e["result"]["GFLOP_per_s"]["one_core"]
            parts = [
                f"{rows} rows: XLA {every[f'xla_{rows}']:.0f} ({one[f'xla_{rows}']:.0f} on one core), "
                f"PyTorch {every[f'torch_{rows}']:.0f} ({one[f'torch_{rows}']:.0f})"
                for rows in (1024, e["result"]["work"]["decoding_batch"])
            ]
            lines.append(f"\nProduct rates (`{e['command']}`), GFLOP/s: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def memory_table(entries: dict) -> str:
    lines = [
        "| compiled for | policy | remat | arguments GiB | temporaries GiB | total GiB per chip | TPU compiler |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        if not name.startswith("memory"):
            continue
        for r in e["result"]:
            if "refused" in r:
                lines.append(f"| {r['target']} | {r['policy']} | {r['remat']} | | | | refused: {r['refused']} |")
                continue
            lines.append(
                f"| {r['target']} | {r['policy']} | {r['remat']} | {_f(r['arguments_GiB'])} | {_f(r['temp_GiB'])} | "
                f"{_f(r['total_GiB'])} | accepted |"
            )
    return "\n".join(lines)


def entry_commits(results: dict) -> dict[str, list[str]]:
    """{commit: entries measured at it}, from each entry's own environment (an `--only` run
    re-measures some entries at a later commit than the set's)."""
    commits = {}
    for name, e in results["entries"].items():
        env = e["result"].get("environment", {}) if isinstance(e["result"], dict) else {}
        commits.setdefault(env.get("git") or results["environment"]["git"], []).append(name)
    return commits


def commits_text(results: dict) -> str:
    """'commit X' when every entry was measured there, else each commit with its entries."""
    commits = entry_commits(results)
    if len(commits) == 1:
        return f"commit {next(iter(commits))}"
    return "; ".join(f"commit {c}: {', '.join(names)}" for c, names in commits.items())


def environment_block(results: dict) -> str:
    line = common.environment_line(results["environment"], commits_text(results))
    return f"Set `{results['set']}`; environment: {line}."


def speed_summary(results: dict) -> str:
    """One sentence for the README: each comparison's median ratio, the environment in brief."""
    entries, parts = results["entries"], []
    ceilings = floor_ceilings(entries)
    for name, e in entries.items():
        r = e["result"]
        if name.startswith("eval"):
            warm = common.warm_total(r)["speedup"]
            cold = next(x for x in r["phases"] if x["phase"].startswith("total (jaxunlearn cold, incl"))["speedup"]
            cached = [x["speedup"] for x in r["phases"] if "compilation cache" in x["phase"]]
            again = f" ({cached[0]:.2f}x when an earlier run left its compilation cache)" if cached else ""
            model = " of a model finetuned on them (answers from scoring)" if r.get("memorized_epochs") else ""
            ceiling = ceilings.get(name, {}).get("xla_ceiling")
            bound = f" (at most {ceiling:.2f}x at this CPU's product rates)" if ceiling else ""
            parts.append(
                f"TOFU evaluation ({r['rows']} rows{model}) {warm:.2f}x the transformers pipeline warm{bound}, "
                f"{cold:.2f}x cold{again}, answers identical ({r['identical_generations']})"
            )
        elif name.startswith("choice"):
            same = "equal" if r["acc_jaxunlearn"] == r["acc_lm_eval"] else "DIFFERENT"
            parts.append(
                f"{r['task'].upper()} {r['fewshot']}-shot multiple choice ({r['questions']} questions) "
                f"{r['speedup']:.2f}x lm-eval's HF backend, {same} accuracy"
            )
        elif name.startswith("train_step"):
            logits = ", whole logits" if r.get("vocab_block") == 0 else ""
            if r.get("precompute_reference"):
                logits += f", reference NLL precomputed, its pass spread over {r['epochs']} epochs"
            parts.append(f"the {r['objective']} unlearning step ({r['shape']}{logits}) {r['speedup']:.2f}x PyTorch")
    env = results["environment"]
    return (
        f"Speed (set `{results['set']}` of `benchmarks/run_all.py`, {env['cores']}-core {env['cpu']}, "
        f"{commits_text(results)}): " + "; ".join(parts) + "."
    )


RENDERERS = {
    "environment": environment_block,
    "train_step": train_table,
    "eval": eval_table,
    "choice": choice_table,
    "memory": memory_table,
    "floor": floor_table,
    "summary": speed_summary,
}
WHOLE = {"environment", "summary"}  # renderers that read the whole results file


def render(page: str, results: dict) -> str:
    def fill(m: re.Match) -> str:
        name = m.group(1)
        body = RENDERERS[name](results) if name in WHOLE else RENDERERS[name](results["entries"])
        return f"<!-- results: {name} -->\n{body}\n<!-- /results -->"

    return re.sub(r"<!-- results: (\w+) -->\n.*?<!-- /results -->", fill, page, flags=re.S)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not RESULTS.exists():
        print(f"{RESULTS} does not exist; run python benchmarks/run_all.py first")
        return 1
    results = json.loads(RESULTS.read_text())
    stale = []
    for page in PAGES:
        text = page.read_text()
        new = render(text, results)
        if "--write" in argv and new != text:
            page.write_text(new)
            print(f"wrote {page.relative_to(REPO)}")
        elif new != text:
            stale.append(str(page.relative_to(REPO)))
    if stale:
        print(f"stale: {', '.join(stale)}; python scripts/docs_benchmarks.py --write")
        return 1
    print("up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
