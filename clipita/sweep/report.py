"""After a sweep: the best trial as a ready-to-run ``clipita fit`` YAML, the Optuna plots, and a summary."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from clipita.experiment import read_fit_config
from clipita.refit import NAMED_LOGGERS

from .spec import SweepSpec
from .study import state_counts
from .trial import _class_name, redirect_checkpoints

SUMMARY_METRICS = ("val/map@10", "val/all/mrr", "val/all/r_precision", "val/all/p@10", "val/all/ndcg@10")


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """``set_dotted(c, "model.net.fusion_weights", w)`` sets ``c["model"]["net"]["fusion_weights"] = w``."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def best_values(spec: SweepSpec, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The best trial's config values, re-derived from its stored Optuna parameters."""
    return spec.search_space.sample(optuna.trial.FixedTrial(trial.params), spec.overrides)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_best_config(spec: SweepSpec, study: optuna.Study, path: Path, storage_url: str) -> Path:
    """Write the base config merged with the fixed overrides and the best trial's values."""
    best = study.best_trial
    config = read_fit_config(spec.base_config)
    for key, value in {**spec.overrides, **best_values(spec, best)}.items():
        set_dotted(config, key, value)
    trainer = config.get("trainer") or {}
    if _class_name(trainer.get("logger")) in NAMED_LOGGERS:  # its own run folder, not the base config's
        init_args = trainer["logger"].setdefault("init_args", {})
        init_args["name"] = f"{spec.study_name}_best"
        callbacks = redirect_checkpoints(
            trainer.get("callbacks"), f"{init_args.get('save_dir', 'runs')}/{init_args['name']}/checkpoints"
        )
        if callbacks is not None:
            trainer["callbacks"] = callbacks
    header = [
        f"# The best trial of Optuna study {spec.study_name!r} (written by `clipita sweep {spec.source}`).",
        f"# storage: {storage_url}",
        f"# trial {best.number}: {spec.metric} = {best.value:.4f} ({spec.reduce} epoch "
        f"{best.user_attrs.get('best_epoch', '?')} of {best.user_attrs.get('epochs_run', '?')});"
        f" base config: {spec.base_config_origin or spec.base_config} (as snapshotted when the study began)",
        f"# clipita fit --config {path}",
    ]
    _atomic_write(path, "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, width=110))
    return path


def save_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """Optimisation history, parameter importances and intermediate values (learning curves) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    plots = {
        "optimization_history.png": ovm.plot_optimization_history,
        "param_importances.png": ovm.plot_param_importances,
        "intermediate_values.png": ovm.plot_intermediate_values,
    }
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the matplotlib backend is "experimental"
                ax = plot(study)
            axis = ax.flat[0] if hasattr(ax, "flat") else ax
            legend = axis.get_legend()
            if legend is not None and len(legend.get_texts()) > 12:  # one entry per trial: unreadable
                legend.remove()
            figure = axis.figure
            figure.set_size_inches(9, 5.5)
            figure.tight_layout()
            figure.savefig(folder / name, dpi=110)
            plt.close(figure)
            written.append(folder / name)
        except Exception as err:  # noqa: BLE001 - e.g. importances need >= 2 complete trials
            print(f"clipita sweep: skipped {name}: {type(err).__name__}: {err}")
    return written


def summarize(spec: SweepSpec, study: optuna.Study, storage_url: str) -> dict[str, Any]:
    """A JSON-able summary of the study: trial states, best trial, a ranking, worker and wall times."""
    trials = study.get_trials(deepcopy=False)
    summary: dict[str, Any] = {
        "study_name": spec.study_name,
        "storage": storage_url,
        "objective": {"metric": spec.metric, "direction": spec.direction, "reduce": spec.reduce},
        "n_trials": len(trials),
        "states": state_counts(study),
        "workers": sorted({t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs}),
        "trial_wall_s": round(sum(t.user_attrs.get("wall_s", 0.0) for t in trials), 1),
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary["best"] = {
            "number": best.number,
            "value": best.value,
            "values": best_values(spec, best),
            "best_epoch": best.user_attrs.get("best_epoch"),
            "epochs_run": best.user_attrs.get("epochs_run"),
            "val": {k: v for k, v in best.user_attrs.items() if k.startswith("val/")},
            "run_dir": best.user_attrs.get("run_dir"),
        }
    summary["failed"] = [
        {"number": t.number, "error": t.user_attrs.get("error", "(no message)")}
        for t in trials
        if t.state == TrialState.FAIL
    ]
    summary["ranking"] = [
        {"number": t.number, "value": t.value, "epochs_run": t.user_attrs.get("epochs_run"), **t.params}
        for t in sorted(complete, key=lambda t: t.value, reverse=spec.maximize)
    ]
    return summary


def format_summary(summary: Mapping[str, Any], top: int = 10) -> str:
    """The printed end-of-sweep report."""
    states = summary["states"]
    lines = [
        f"\nstudy {summary['study_name']!r} ({summary['storage']}): {summary['n_trials']} trials - "
        + ", ".join(f"{k.lower()} {v}" for k, v in states.items() if v),
        f"objective: {summary['objective']['metric']} ({summary['objective']['direction']}, "
        f"{summary['objective']['reduce']} epoch); workers: {len(summary['workers'])}; "
        f"trial time: {summary['trial_wall_s']:.0f} s",
    ]
    best = summary.get("best")
    if best:
        lines.append(f"best trial {best['number']}: {best['value']:.4f} (epoch {best['best_epoch']})")
        for key, value in best["values"].items():
            if isinstance(value, dict):
                value = "{" + ", ".join(f"{k}: {v:.3f}" for k, v in value.items()) + "}"
            lines.append(f"  {key} = {value}")
        metrics = [f"{k.rsplit('/', 1)[1]} {best['val'][k]:.4f}" for k in SUMMARY_METRICS if k in best["val"]]
        if metrics:
            lines.append("  val: " + ", ".join(metrics))
    else:
        lines.append("no trial completed yet")
    if summary["ranking"]:
        lines.append(f"top {min(top, len(summary['ranking']))} trials:")
        for row in summary["ranking"][:top]:
            lines.append(f"  #{row['number']:<4} {row['value']:.4f}  epochs {row['epochs_run']}")
    for failed in summary["failed"][:5]:
        lines.append(f"failed trial {failed['number']}: {failed['error'][:300]}")
    return "\n".join(lines)


def write_report(
    spec: SweepSpec, study: optuna.Study, storage_url: str, best_config: Path | None
) -> dict[str, Any]:
    """Best YAML + plots + ``summary.json`` in the study folder; print the summary; return it."""
    study_dir = spec.study_dir
    summary = summarize(spec, study, storage_url)
    files: list[str] = []
    if summary.get("best"):
        target = best_config or study_dir / "best.yaml"
        files.append(str(write_best_config(spec, study, target, storage_url)))
        files += [str(p) for p in save_plots(study, study_dir)]
    summary["files"] = files
    _atomic_write(study_dir / "summary.json", json.dumps(summary, indent=1, default=str))
    print(format_summary(summary))
    for f in files:
        print(f"wrote {f}")
    return summary
