"""`jaxunlearn` command line. Errors a user can fix print one line and exit non-zero."""

from __future__ import annotations

import argparse
import logging
import sys

from .compilation_cache import enable as enable_compilation_cache
from .errors import JaxUnlearnError
from .storage import is_remote


def _load_for_cli(args, **kwargs):
    """load_pretrained with the command's --dtype / --allow-pickle, the fix named as a flag."""
    from .checkpoints.api import load_pretrained
    from .checkpoints.torch_bin import PickleRefused

    try:
        return load_pretrained(
            getattr(args, "src", None) or args.model, dtype=args.dtype, allow_pickle=args.allow_pickle, **kwargs
        )
    except PickleRefused as e:
        raise e.naming("--allow-pickle") from None


def _convert(args) -> None:
    from pathlib import Path

    from .checkpoints.api import parse_size, save_pretrained
    from .models.registry import num_parameters
    from .paths import check_writable_dir

    if Path(args.dst).exists() and not args.overwrite:
        raise JaxUnlearnError(f"{args.dst} already exists; choose another destination or pass --overwrite")
    parse_size(args.max_shard_size)  # before the model loads
    check_writable_dir(Path(args.dst).absolute().parent, "DST's parent directory")
    model, tokenizer = _load_for_cli(args)
    out = save_pretrained(
        model, tokenizer, args.dst, format=args.to, overwrite=args.overwrite, max_shard_size=args.max_shard_size
    )
    print(
        f"wrote {args.to} checkpoint of {model.config.model_type} "
        f"({num_parameters(model.config) / 1e6:.1f}M parameters) to {out}"
    )


def _generate(args) -> None:
    from .evaluation.generation import encode_prompts, greedy_generate, strip_after_eos

    model, tokenizer = _load_for_cli(args, require_tokenizer=True)
    ids, mask, pad_id = encode_prompts(tokenizer, args.prompt, chat=args.chat)
    tokens = greedy_generate(model, ids, mask, args.max_new_tokens, tokenizer.eos_token_id, pad_id)
    for prompt, row in zip(args.prompt, strip_after_eos(tokens, tokenizer.eos_token_id)):
        print(f"> {prompt}\n{tokenizer.decode(row, skip_special_tokens=True)}\n")


def _task_vector(args) -> None:
    from pathlib import Path

    from .checkpoints.api import load_pretrained, save_pretrained
    from .paths import check_writable_dir
    from .training.task_vector import negate_task_vector

    if Path(args.out).exists() and not args.overwrite:
        raise JaxUnlearnError(f"{args.out} already exists; choose another destination or pass --overwrite")
    check_writable_dir(Path(args.out).absolute().parent, "--out's parent directory")
    target, tokenizer = load_pretrained(args.target, dtype=args.dtype)
    finetuned, _ = load_pretrained(args.finetuned, dtype=args.dtype)
    model = negate_task_vector(target, finetuned, args.alpha)
    out = save_pretrained(model, tokenizer, args.out, overwrite=args.overwrite)
    print(f"wrote target - {args.alpha} x (finetuned - target) to {out}")


def _train_command(kind: str):
    def run(args) -> None:
        from .config import load_config
        from .pipelines import unlearn as api

        cfg = load_config(args.config, args.overrides)
        fn = api.unlearn if kind == "unlearn" else api.finetune
        summary = fn(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
        summary.pop("model", None)
        final = summary.get("final") or (summary.get("tasks") or [{}])[-1].get("final", {})
        print(f"{kind} done: {cfg.output_dir(kind)} (final loss {final.get('loss', float('nan')):.4f})")

    return run


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _keys_epilog() -> str:
    from .config import config_help

    return "config keys (key = default: meaning; docs/reference/config.md):\n" + "\n".join(config_help())


def _add_train_parser(sub, kind: str, help_text: str) -> None:
    p = sub.add_parser(
        kind,
        help=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{help_text}. Settings come from defaults, then --config FILE (YAML), then key=value overrides.",
        epilog=_keys_epilog(),
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=5e-6")
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue the run in output.dir from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in output.dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_command(kind))


def _eval(args) -> None:
    from .config import load_config
    import jax

    from .parallel import initialize_distributed_from_env
    from .pipelines.evaluate import evaluate
    from .evaluation.report import markdown_table

    cfg = load_config(args.config, args.overrides)
    out = cfg.output_dir("eval")
    _refuse_existing(out, "an evaluation", args.overwrite)
    initialize_distributed_from_env()  # a multi-host launch: every process evaluates, process 0 writes
    summary = evaluate(cfg, progress=not args.no_progress and jax.process_index() == 0)
    if jax.process_index() > 0:
        print(f"process {jax.process_index()}: evaluated with the others; process 0 wrote {out}")
        return
    if cfg.eval.benchmark == "tofu":
        print(markdown_table(summary, f"Evaluation of {cfg.model.path}"))
    else:
        from .suites.report import markdown

        print(markdown(summary, f"{cfg.eval.benchmark.upper()} evaluation of {cfg.model.path}"))
    print(f"results in {out} ({summary['seconds']:.0f} s)")


def _attack(args) -> None:
    from .attacks.robustness import markdown
    from .config import load_config
    from .pipelines.attack import attack

    cfg = load_config(args.config, args.overrides)
    out = cfg.output_dir("attack")
    _refuse_existing(out, "an attack summary", args.overwrite)
    summary = attack(cfg, progress=not args.no_progress)
    print(markdown(summary))
    print(f"results in {out} (summary.json, report.md, robustness.png; {summary['seconds']:.0f} s)")


def _flag(args) -> None:
    from .config import load_config
    from .pipelines.flag import flag

    cfg = load_config(args.config, args.overrides)
    out = cfg.output_dir("flag")
    _refuse_existing(out, "flagged dialogues", args.overwrite)
    s = flag(cfg, progress=not args.no_progress)
    print(f"{s['flagged']} of {s['rows']} outputs flagged ({s['share_flagged']:.0%}): {s['by_category']}")
    print(f"forget.jsonl / retain.jsonl / report.md / scores.png in {out} ({s['seconds']:.0f} s)")


def _chen(args) -> None:
    from .config import load_config
    from .pipelines.chen import report, run_chen

    cfg = load_config(args.config, args.overrides)
    out = cfg.output_dir("chen")
    _refuse_existing(out, "a run", args.overwrite)
    summary = run_chen(cfg, progress=not args.no_progress)
    print(report(summary))
    print(f"results in {out} (flag_before, unlearn, flag_after, eval_before, eval_after; {summary['seconds']:.0f} s)")


def _demo(args) -> None:
    from .pipelines.demo import run_demo

    result = run_demo(args.config, args.out, args.overrides, progress=not args.no_progress)
    print(result["table"])
    print(
        f"demo done in {result['seconds']:.0f} s: report in {args.out}/report "
        f"(README.md, comparison.png), unlearned HF models in {args.out}/unlearn/*/model"
    )


def _report(args) -> None:
    from .pipelines.evaluate import compare

    print(
        compare(
            args.runs,
            args.out,
            retain=args.retain,
            recompute=args.recompute,
            labels=args.label,
            at_utility=args.at_utility,
            baseline=args.baseline,
            utility_metric=args.utility_metric,
        )
    )


def _aggregate(args) -> None:
    import json

    from .pipelines.evaluate import aggregate_evaluation
    from .evaluation.report import markdown_table

    summary = aggregate_evaluation(args.run, args.retain, args.out)
    print(json.dumps(summary, indent=2) if args.json else markdown_table(summary, f"{args.run} ({summary['format']})"))


def _add_config_command(sub, name: str, help_text: str, description: str, overwrite_help: str, func) -> None:
    """A command that runs on a config (defaults, --config YAML, key=value overrides) and
    writes to output.dir."""
    p = sub.add_parser(
        name,
        help=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_keys_epilog(),
        description=description,
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--config")
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=func)


def _refuse_existing(out, what: str, overwrite: bool) -> None:
    if (out / "summary.json").exists() and not overwrite:
        raise JaxUnlearnError(f"{out} already holds {what}; pass --overwrite or set output.dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxunlearn", description=__doc__)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: jaxunlearn's INFO messages; -vv: every library's too (Orbax, JAX)",
    )
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR",
        default=None,
        help="persistent XLA compilation cache, so a repeated command skips compiling "
        "(default $JAXUNLEARN_COMPILATION_CACHE or ~/.cache/jaxunlearn/xla; off: none)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert",
        help="convert a checkpoint between formats",
        description="Convert SRC (HF dir, HF-Flax dir, .gguf file, hub id or built-in asset "
        "such as smollm2-135m-instruct) into DST.",
    )
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=("hf", "hf-flax"), default="hf", help="output format (default hf: safetensors)")
    p.add_argument("--dtype", default="float32", help="parameter dtype: float32 or bfloat16")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow pickled pytorch_model.bin (loaded with torch weights_only=True)",
    )
    p.add_argument("--max-shard-size", default="5GB", help="shard safetensors past this size (default 5GB)")
    p.set_defaults(func=_convert)

    _add_train_parser(sub, "unlearn", "unlearn a forget set from a model (objective, data, training, output)")
    _add_train_parser(sub, "finetune", "finetune a model on QA data (TOFU target and retain models)")

    _add_config_command(
        sub,
        "eval",
        "evaluate a model (TOFU, Closer Look, MIA; eval.benchmark=muse: MUSE; =choice: WMDP, MMLU, lm-eval)",
        "Evaluate model.path on eval.sets and write per_example.jsonl, summary.json, "
        "report.md, TOFU_EVAL.json and plots to output.dir.",
        "replace an evaluation already in output.dir",
        _eval,
    )

    _add_config_command(
        sub,
        "attack",
        "attack an unlearned model's forgetting (relearning, quantization, prompt probes, extraction)",
        "Run attack.attacks on model.path (the unlearned model), each followed by the forget-set "
        "evaluation, and write summary.json, report.md and robustness.png to output.dir: each attack's "
        "forget metrics and recovery ratio toward attack.target_model.",
        "replace an attack summary already in output.dir",
        _attack,
    )

    _add_config_command(
        sub,
        "flag",
        "answer prompts, let judges flag outputs to unlearn (Chen et al.), write forget/retain sets",
        "Answer flag.prompts_file (or the TOFU split flag.split) with model.path, judge every output "
        "with flag.judges, and write forget.jsonl (flagged, with category and reason), retain.jsonl, "
        "summary.json, report.md and scores.png to output.dir.",
        "replace flagged dialogues already in output.dir",
        _flag,
    )

    _add_config_command(
        sub,
        "chen",
        "Chen et al. end to end: flag, unlearn the flagged dialogues, judge again, evaluate",
        "Flag model.path's answers to flag.prompts_file, unlearn the flagged dialogues with "
        "objective.name keeping the rest, judge the unlearned model's answers again and evaluate both; "
        "summary.json and report.md give the share flagged before and after and the retain numbers.",
        "replace a run already in output.dir",
        _chen,
    )

    p = sub.add_parser(
        "task-vector",
        help="task-vector negation: target - alpha x (finetuned - target) (MUSE's baseline)",
        description="Unlearn by negating a task vector: finetune TARGET on the forget data first "
        "(jaxunlearn finetune), then write TARGET - ALPHA x (FINETUNED - TARGET) to --out.",
    )
    p.add_argument("target", help="the model to unlearn from (HF dir, hub id or asset)")
    p.add_argument("finetuned", help="TARGET finetuned on the forget data")
    p.add_argument("--out", required=True, help="where to write the unlearned model (HF safetensors)")
    p.add_argument("--alpha", type=float, default=1.0, help="how far to move away (default 1.0)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_task_vector)

    p = sub.add_parser("demo", help="scaled-down TOFU end to end with the real SmolLM2-135M (CPU, minutes)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides applied to every stage")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_demo)

    p = sub.add_parser("report", help="put several evaluations side by side (markdown + plot)")
    p.add_argument("runs", nargs="+", help="evaluation directories (holding summary.json)")
    p.add_argument("--out", help="also write comparison.md and comparison.png here")
    p.add_argument(
        "--label",
        action="append",
        help="a row's name, once per run in order (default: the path parts that tell the runs apart)",
    )
    p.add_argument(
        "--at-utility",
        type=float,
        metavar="DROP",
        help="RUNS are unlearn runs evaluated every k steps: compare each at the step whose relative utility drop "
        "from --baseline is closest to DROP (0.05: 5%%)",
    )
    p.add_argument("--baseline", help="with --at-utility: the evaluation of the model before unlearning")
    p.add_argument(
        "--utility-metric",
        default="model_utility",
        help="with --at-utility: the utility (a headline key or SET.METRIC; default model_utility)",
    )
    p.add_argument("--retain", help="recompute each run's forget quality against this retain evaluation")
    p.add_argument(
        "--recompute",
        action="store_true",
        help="recompute every number from the runs' per-example results (also TOFU / open-unlearning logs)",
    )
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "aggregate",
        help="every number of an evaluation from its per-example results, no model",
        description="Compute set numbers, model utility (TOFU 9 / Closer Look 18), forget efficacy, "
        "MIA AUCs and, with --retain, forget quality and PrivLeak from RUN's saved "
        "results: a jaxunlearn eval directory (per_example.jsonl), TOFU's eval logs "
        "(eval_log*.json or eval_log_aggregated.json) or open-unlearning's TOFU_EVAL.json.",
    )
    p.add_argument("run", help="evaluation to aggregate")
    p.add_argument("--retain", help="a retain model's evaluation (any of the same formats): forget quality")
    p.add_argument("--out", help="write summary.json, report.md, per_example.jsonl, TOFU_EVAL.json and plots here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.set_defaults(func=_aggregate)

    p = sub.add_parser("generate", help="greedy generation from a checkpoint")
    p.add_argument("model", help="checkpoint: HF dir, .gguf, hub id or built-in asset")
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for a batch)")
    p.add_argument(
        "--chat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wrap prompts in the tokenizer's chat template (default on)",
    )
    p.add_argument("--max-new-tokens", type=_positive_int, default=64, help="new tokens per prompt (at least 1)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--allow-pickle", action="store_true", help="allow pickled pytorch_model.bin")
    p.set_defaults(func=_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides placed after a flag (`--resume train.lr=1e-5`) are overrides too
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(level=logging.INFO if args.verbose > 1 else logging.WARNING, format="%(levelname)s %(message)s")
    if args.verbose:  # Orbax logs dozens of INFO lines per checkpoint: only with -vv
        logging.getLogger("jaxunlearn").setLevel(logging.INFO)
    try:
        if is_remote(getattr(args, "out", None)):
            raise JaxUnlearnError(
                f"--out {args.out}: this command writes a local directory; write it locally and copy it up "
                "(gsutil -m cp -r), or use output.dir=URL with unlearn, finetune, eval, attack, flag or chen"
            )
        enable_compilation_cache(args.compilation_cache)
        args.func(args)
    except JaxUnlearnError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except OSError as e:  # a full disk, a read-only file system... met while writing
        from .paths import describe_os_error

        print(f"error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
