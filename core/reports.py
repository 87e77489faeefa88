"""Evaluation reports, atomic artifact writing, the results table and the comparison charts."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:   # pandas is imported where it is used: it would add ~0.3 s to every command's start
    import pandas as pd

RESULT_COLUMNS = ["finished", "variant", "seed", "accuracy", "macro_f1", "weighted_f1", "n_test",
                  "train_seconds", "epochs_run", "model_dir"]


def atomic_write(path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; give the file a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def swap_in_dir(staging: Path, final: Path) -> None:
    """Replace directory ``final`` by the complete ``staging`` one; the old one is deleted only after."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        if old.exists():          # put the previous directory back rather than leave none
            os.replace(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def evaluate(probs: np.ndarray, y_true: np.ndarray, classes: list[str]) -> tuple[dict, pd.DataFrame, np.ndarray]:
    """(metrics, per-class report, confusion matrix) of predicted probabilities against labels."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
    y_pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "n_test": int(len(y_true)),
    }
    report = pd.DataFrame(classification_report(y_true, y_pred, labels=labels, target_names=classes,
                                                output_dict=True, zero_division=0)).T
    return metrics, report, confusion_matrix(y_true, y_pred, labels=labels)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure to ``path`` as PNG, atomically, and release it."""
    buf = tempfile.SpooledTemporaryFile()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    buf.seek(0)
    atomic_write(path, buf.read())
    _plt().close(fig)


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 0.8 + 0.5 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=8)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    save_figure(fig, path)


def plot_history(history: pd.DataFrame, path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("loss", "accuracy")):
        for col in (key, f"val_{key}"):
            if col in history:   # a fit without epochs (transfer's logistic head) is one point
                ax.plot(history.index + 1, history[col], label=col, marker="o" if len(history) == 1 else None)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        if ax.lines:
            ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def write_model_artifacts(staging: Path, model, config: dict, metrics: dict, report: pd.DataFrame,
                          cm: np.ndarray, history: pd.DataFrame) -> None:
    """Write every artifact of a finished run into ``staging`` (a directory swapped in afterwards)."""
    import pandas as pd
    from sklearn.preprocessing import LabelEncoder
    classes, variant = config["classes"], config["variant"]
    model.save(staging / "animal_sound_model.keras", include_optimizer=False)
    # For users who expect the seed project's encoder; this toolkit itself never unpickles it.
    encoder = LabelEncoder().fit(classes)
    (staging / "label_encoder.pkl").write_bytes(pickle.dumps(encoder))
    (staging / "config.json").write_text(json.dumps(config, indent=2))
    (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
    report.to_csv(staging / "classification_report.csv", index_label="class")
    pd.DataFrame(cm, index=classes, columns=classes).to_csv(staging / "confusion_matrix.csv", index_label="true")
    history.to_csv(staging / "history.csv", index_label="epoch")
    plot_confusion(cm, classes, staging / "confusion_matrix.png", f"{variant}: test confusion matrix")
    plot_history(history, staging / "training_curves.png", f"{variant}: training curves")


def append_result(results_csv: Path, row: dict) -> pd.DataFrame:
    """Append one finished run to ``results_csv`` (rewritten atomically); returns the whole table."""
    import pandas as pd
    results_csv = Path(results_csv)
    table = pd.read_csv(results_csv) if results_csv.exists() else pd.DataFrame(columns=RESULT_COLUMNS)
    table = pd.concat([table, pd.DataFrame([row])[RESULT_COLUMNS]], ignore_index=True)
    atomic_write(results_csv, table.to_csv(index=False))
    return table


def latest_runs(results_csv: Path) -> pd.DataFrame:
    """The last row of every variant whose model directory still exists, in file order.

    ``model_dir`` is stored relative to the results file, and returned resolved
    against it, so the table works from any working directory.
    """
    import pandas as pd
    results_csv = Path(results_csv)
    if not results_csv.exists():
        return pd.DataFrame(columns=RESULT_COLUMNS)
    table = pd.read_csv(results_csv)
    table = table.groupby("variant", sort=False).tail(1).copy()
    table["model_dir"] = [str(results_csv.parent / d) for d in table["model_dir"]]
    return table[[Path(d, "config.json").exists() for d in table["model_dir"]]].reset_index(drop=True)


def write_charts(results_csv: Path, charts_dir: Path) -> list[Path]:
    """Regenerate the five comparison charts from the latest run of every variant."""
    import pandas as pd
    plt = _plt()
    runs = latest_runs(results_csv)
    if runs.empty:
        return []
    charts_dir = Path(charts_dir)
    reports = {r.variant: pd.read_csv(Path(r.model_dir, "classification_report.csv"), index_col=0)
               for r in runs.itertuples()}
    written = []
    for n, metric in ((1, "precision"), (2, "recall"), (3, "f1-score")):
        table = pd.DataFrame({v: rep[metric] for v, rep in reports.items()})
        table = table.drop(index=[i for i in ("accuracy", "macro avg", "weighted avg") if i in table.index])
        fig, ax = plt.subplots(figsize=(11, 4))
        table.plot.bar(ax=ax, width=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(metric)
        ax.set_title(f"Per-class {metric} on Test (latest run of each variant)")
        ax.legend(fontsize=8, ncol=len(reports))
        name = {1: "chart1_precision_per_class", 2: "chart2_recall_per_class", 3: "chart3_f1_per_class"}[n]
        save_figure(fig, charts_dir / f"{name}.png")
        written.append(charts_dir / f"{name}.png")
    labels = [v.replace("_", "\n") for v in runs["variant"]]   # long names would run into each other
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(labels, runs["accuracy"], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.set_title("Test accuracy by variant (latest run of each)")
    save_figure(fig, charts_dir / "chart4_test_accuracy.png")
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(runs))
    ax.bar(x - 0.2, runs["macro_f1"], 0.4, label="macro F1")
    ax.bar(x + 0.2, runs["weighted_f1"], 0.4, label="weighted F1")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("Macro vs weighted F1 on Test (macro weighs rare classes equally)")
    save_figure(fig, charts_dir / "chart5_macro_vs_weighted_f1.png")
    return written + [charts_dir / "chart4_test_accuracy.png", charts_dir / "chart5_macro_vs_weighted_f1.png"]


def result_row(variant: str, seed: int, metrics: dict, epochs_run: int, model_dir: Path) -> dict:
    return {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "variant": variant, "seed": seed,
            **{k: metrics[k] for k in ("accuracy", "macro_f1", "weighted_f1", "n_test", "train_seconds")},
            "epochs_run": epochs_run, "model_dir": Path(model_dir).name}
