"""Figures (PNG for the README, PDF for papers), drawn with matplotlib's Agg backend:

- accuracy vs trainable parameters (log x), one labelled point per row of a table, methods
  without trainable parameters drawn as horizontal reference lines;
- ablations: the headline metric against each swept setting, numeric values on a numeric axis
  in numeric order, the option's default value included (it is a run like the others) and
  marked, each point with its standard error (error bars; harness.reports.noise); two swept
  settings give a heatmap;
- training curves of one job (loss, learning rate, and validation accuracy per epoch when
  validation ran) from the scalars mmengine wrote in the job's own work folder.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.atomic import atomic_write_bytes
from harness.metrics import harmonic_mean_standard_error, mean_std
from harness.reports import noise
from harness.reports.rows import varying_settings
from harness.reports.tables import ReportTable


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, stem: Path, pdf: bool = True) -> list[Path]:
    """`stem`.png (and .pdf), each written atomically; closes the figure."""
    plt = _pyplot()
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in ("png", "pdf") if pdf else ("png",):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120)
        path = stem.with_suffix(f".{fmt}")
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    plt.close(fig)
    return written


def params_plot(table: ReportTable, stem: Path) -> list[Path]:
    """Headline accuracy vs trainable parameters for the measured rows of `table`."""
    if table.headline is None:
        return []
    frame = table.frame[~table.frame["Quoted"].astype(bool)]
    frame = frame[pd.to_numeric(frame[table.headline], errors="coerce").notna()]
    if frame.empty:
        return []
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    trained = frame[frame["Trainable"] > 0]
    for _, row in trained.iterrows():
        ax.scatter(row["Trainable"], row[table.headline], zorder=3)
        ax.annotate(str(row["Method"]), (row["Trainable"], row[table.headline]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    for i, (_, row) in enumerate(frame[frame["Trainable"] == 0].iterrows()):
        ax.axhline(row[table.headline], linestyle="--", color=f"C{7 + i % 3}", linewidth=1,
                   label=f"{row['Method']} (0 trainable)")
    if not trained.empty:
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.1)  # room for the labels of the outermost points
    else:
        ax.set_xticks([])
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"{table.headline} (%)")
    ax.set_title(table.title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if (frame["Trainable"] == 0).any():
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save(fig, stem)


# -- ablations ------------------------------------------------------------------------------------
def _headline_value(g: pd.DataFrame) -> tuple[str, float, float]:
    """(metric name, value, standard error) of one configuration: HM for base-to-novel (its SE
    by the delta method), else mean top-1 of its first evaluation set."""
    if g["protocol"].iloc[0] == "base2novel":
        cells = noise.base2novel_cells(g)
        if cells is None:
            return "HM", float("nan"), float("nan")
        summ, se_b, se_n, _ = cells
        se = harmonic_mean_standard_error(summ["base"], se_b, summ["novel"], se_n)
        return "HM", summ["hm"], se
    first = g[g["eval"] == g["eval"].iloc[0]]
    return "top-1", mean_std([float(v) for v in first["top1"]])[0], noise.cell_standard_error(first)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _default_for(method: str, key: str, settings: dict[str, Any]) -> Any:
    """The value a method option takes when not set: its recipe's, else its config default."""
    if not key.startswith("method_options."):
        return None
    name = key.split(".", 1)[1]
    recipe = {k[len("recipe.method_options."):]: v for k, v in settings.items() if k.startswith("recipe.method_options.")}
    if name in recipe:
        return recipe[name]
    try:
        from methods.registry import default_options  # the method files (torch) only for a plot's axis

        return default_options(method).get(name)
    except Exception:  # a method removed since the run
        return None


def ablation_sets(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (protocol, dataset, method, shots): the settings that vary between its configurations
    (one or two of them, other than recipe records) and the headline value of each."""
    out = []
    for (protocol, dataset, method, shots), part in df.groupby(
            ["protocol", "dataset", df["settings"].map(lambda s: s.get("method")), "shots"], sort=False, dropna=False):
        configs = [(g["settings"].iloc[0], *_headline_value(g)) for _, g in part.groupby("config", sort=False)]
        if len(configs) < 2:
            continue
        _, varying = varying_settings([c[0] for c in configs])
        varying = [k for k in varying if not k.startswith("recipe.")]
        if not 1 <= len(varying) <= 2:
            continue
        points = [({k: s.get(k) for k in varying}, value) for s, _, value, _ in configs]
        out.append({"protocol": protocol, "dataset": dataset, "method": method, "shots": shots,
                    "axes": varying, "metric": configs[0][1], "points": points,
                    "ses": [se for *_, se in configs],
                    "defaults": {k: _default_for(method, k, configs[0][0]) for k in varying}})
    return out


def _short(key: str) -> str:
    return key.split(".", 1)[1] if key.startswith(("method_options.", "schedule.", "data.")) else key


def _sorted_values(values: list[Any]) -> list[Any]:
    """Numbers in numeric order (never as text: 64 < 128 < 256), anything else as text."""
    unique = list(dict.fromkeys(values))
    if all(_number(v) is not None for v in unique):
        return sorted(unique, key=lambda v: _number(v))
    return sorted(unique, key=str)


def ablation_table(ablation: dict[str, Any], annotated: bool = False) -> pd.DataFrame:
    """The ablation's values as a table: one row per value (or a grid for two axes). Numbers,
    or with `annotated` text cells as the report shows them: `value (SE se)`, the best bold and
    `≈` on the values within noise of it (`noise.best_flags`)."""
    axes = ablation["axes"]
    values = [round(value, 2) for _, value in ablation["points"]]
    if annotated:
        values = _annotated(ablation)
    frame = pd.DataFrame([{**{_short(k): v for k, v in point.items()}, ablation["metric"]: value}
                          for (point, _), value in zip(ablation["points"], values)])
    first = _short(axes[0])
    frame = frame.set_index(first).loc[_sorted_values(list(frame[first]))].reset_index()
    if len(axes) == 2:
        second = _short(axes[1])
        frame = frame.pivot(index=first, columns=second, values=ablation["metric"])
        frame = frame.loc[_sorted_values(list(frame.index)), _sorted_values(list(frame.columns))]
        frame.columns = [f"{second}={c}" for c in frame.columns]
        frame = frame.reset_index()
    return frame


def _annotated(ablation: dict[str, Any]) -> list[str]:
    values = [value for _, value in ablation["points"]]
    ses = ablation.get("ses") or [float("nan")] * len(values)
    flags = noise.best_flags(values, ses)
    best = max(range(len(values)), key=lambda i: values[i] if values[i] == values[i] else float("-inf"))
    cells = []
    for i, (value, se, flag) in enumerate(zip(values, ses, flags)):
        text = "" if value != value else f"{value:.2f}" + ("" if se != se else f" (SE {se:.2f})")
        if i == best and text:
            text = f"**{text}**"
        elif flag:
            text += f" {noise.MARK}"
        cells.append(text)
    return cells


#: Under an annotated ablation table.
ABLATION_NOTE = (f"Bold: the best value; `{noise.MARK}`: within noise of it (|difference| <= 2 sqrt(SE_a^2 + SE_b^2)). "
                 "SE: eval-set sampling error (docs/reports.md).")


def ablation_plot(ablation: dict[str, Any], stem: Path) -> list[Path]:
    plt = _pyplot()
    axes, metric = ablation["axes"], ablation["metric"]
    title = f"{ablation['method']} ({ablation['protocol']}, {ablation['dataset']})"
    if len(axes) == 1:
        key = axes[0]
        values = {point[key]: value for point, value in ablation["points"]}
        ses = dict(zip((point[key] for point, _ in ablation["points"]),
                       ablation.get("ses") or [float("nan")] * len(values)))
        xs = _sorted_values(list(values))
        fig, ax = plt.subplots(figsize=(4.8, 3.4))
        numeric = all(_number(x) is not None for x in xs)
        pos = [_number(x) for x in xs] if numeric else list(range(len(xs)))
        ax.errorbar(pos, [values[x] for x in xs], yerr=[ses[x] for x in xs], fmt="o-", capsize=3,
                    label="± 1 SE (eval-set sampling)")
        default = ablation["defaults"].get(key)
        if default in values:
            i = xs.index(default)
            ax.plot([pos[i]], [values[default]], "*", markersize=14, color="C3", label=f"default ({default})")
        ax.legend(fontsize=8)
        if numeric and min(pos) > 0 and max(pos) / min(pos) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(pos, [str(x) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel(_short(key))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    else:
        first, second = axes
        grid = ablation_table(ablation)
        rows = [str(v) for v in grid[_short(first)]]
        cols = [c.split("=", 1)[1] for c in grid.columns[1:]]
        data = grid.iloc[:, 1:].to_numpy(dtype=float)
        ses = ablation.get("ses") or [float("nan")] * len(ablation["points"])
        se_grid = ablation_table({**ablation, "points": [(p, se) for (p, _), se in zip(ablation["points"], ses)]})
        se_data = se_grid.iloc[:, 1:].to_numpy(dtype=float)
        fig, ax = plt.subplots(figsize=(1.4 * len(cols) + 2.5, 1.0 * len(rows) + 1.8))
        image = ax.imshow(data, cmap="viridis", aspect="auto")
        low, high = np.nanmin(data), np.nanmax(data)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if not np.isnan(data[i, j]):
                    bright = high > low and (data[i, j] - low) / (high - low) > 0.6  # viridis turns yellow
                    se = "" if np.isnan(se_data[i, j]) else f"\n± {se_data[i, j]:.1f} SE"
                    ax.text(j, i, f"{data[i, j]:.1f}{se}", ha="center", va="center", fontsize=9,
                            color="black" if bright else "white")
        ax.set_xticks(range(len(cols)), cols)
        ax.set_yticks(range(len(rows)), rows)
        ax.set_xlabel(_short(second))
        ax.set_ylabel(_short(first))
        fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return save(fig, stem)


def ablation_stem(folder: Path, ablation: dict[str, Any], several: bool) -> Path:
    """`ablation_<option>[_x_<option>]` (prefixed by method / dataset when a report holds several)."""
    name = "_x_".join(_short(k) for k in ablation["axes"])
    if several:
        shots = ablation["shots"]
        name = f"{ablation['protocol']}_{ablation['dataset']}_{ablation['method']}" + (
            f"_K{int(shots)}" if shots == shots and shots is not None else "") + f"_{name}"
    return folder / f"ablation_{name}"


# -- training curves --------------------------------------------------------------------------------
def read_scalars(job_dir: Path) -> list[dict[str, Any]]:
    """Every line mmengine logged for the job (`work/<timestamp>/vis_data/scalars.json`; a
    resumed job has one file per attempt, read in order)."""
    lines = []
    for path in sorted(Path(job_dir).glob("work/*/vis_data/scalars.json")):
        for text in path.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue  # a line cut by a kill: the rest of the log is still good
    return lines


def training_curves(job_dir: Path, stem: Path, title: str) -> list[Path]:
    """Loss and lr per logged iteration, validation top-1 per epoch when validation ran."""
    scalars = read_scalars(job_dir)
    train = [s for s in scalars if "loss" in s and "step" in s]
    evals = [s for s in scalars if any(k.endswith("/top1") for k in s)]
    if not train:
        return []
    plt = _pyplot()
    panels = 3 if evals else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.0))
    steps = [s["step"] for s in train]
    axes[0].plot(steps, [s["loss"] for s in train])
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("loss")
    axes[1].plot(steps, [s.get("lr", np.nan) for s in train], color="C1")
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("learning rate")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if evals:
        for key in sorted({k for s in evals for k in s if k.endswith("/top1")}):
            pts = [(s.get("epoch", s.get("step")), s[key]) for s in evals if key in s]
            axes[2].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=key)
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("validation top-1 (%)")
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, stem)
