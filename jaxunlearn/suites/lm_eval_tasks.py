"""lm-eval tasks run on a loaded model through the jaxunlearn adapter, for reports."""

from __future__ import annotations

from ..errors import ConfigError


def run_lm_eval(
    model, tokenizer, tasks: list[str], batch_size: int = 16, include_path: str | None = None, limit: int | None = None
) -> dict:
    """{task: {metric: value}} of lm-eval's own results (its metric names, filter suffix dropped)."""
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(
            "choice.lm_eval_tasks needs lm-eval: pip install 'jaxunlearn[lm-eval]' (or empty the list)"
        ) from None
    from .lm_eval_model import JaxUnlearnLM

    manager = _task_index(tasks, include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"lm-eval does not know the task(s) {', '.join(unknown)}; see `lm_eval ls tasks`, or put their YAML in "
            "choice.lm_eval_include"
        )
    lm = JaxUnlearnLM(model=model, tokenizer=tokenizer, batch_size=batch_size)
    results = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit)
    return {
        task: {metric.split(",")[0]: value for metric, value in r.items() if "," in metric and value != "N/A"}
        for task, r in results["results"].items()
    }


def _task_index(tasks: list[str], include_path: str | None):
    """lm-eval's task index: the include path's alone when it holds every task asked for
    (indexing lm-eval's built-in tasks takes about 8 s), else with the built-ins."""
    from lm_eval.tasks import TaskManager

    if include_path:
        own = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in own.all_tasks for t in tasks):
            return own
        return TaskManager(include_path=include_path)
    return TaskManager()
