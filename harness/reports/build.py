"""`harness report RESULTS_DIR... [--format] [--out] [--with-published]`: every table of the
papers' layouts for the jobs found in the folders, written as report.md, report.tex (one
`tabular` per table, also as tables/<slug>.tex), tables/<slug>.csv, per_job.csv, and plots/."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.atomic import atomic_write_text
from harness.errors import HarnessError
from harness.jobs.identity import short_hash
from harness.reports import aggregate, latex, noise, plots, published, render, rows, tables

FORMATS = ("md", "csv", "latex")


@dataclass
class Report:
    out: Path
    tables: list[tables.ReportTable]
    markdown: str
    written: list[Path] = field(default_factory=list)


def default_out(folders: list[Path]) -> Path:
    """One folder: `<folder>/report`; several: `results/report-<hash of their paths>`."""
    if len(folders) == 1:
        return folders[0] / "report"
    return Path("results") / f"report-{short_hash(sorted(str(f.resolve()) for f in folders), 8)}"


def parse_formats(text: str) -> tuple[str, ...]:
    if text == "all":
        return FORMATS
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in chosen if x not in FORMATS]
    if bad or not chosen:
        raise HarnessError(f"--format {text!r}: choose md, csv, latex (comma-separated) or all")
    return chosen


def write_report(folders: list[Path], out: Path, formats: tuple[str, ...] = FORMATS,
                 with_published: bool = False, draw: bool = True, curves: bool = True) -> Report:
    found = aggregate.collect(folders)
    df = aggregate.eval_frame(found.records)
    built = tables.build_tables(df) if not df.empty else []
    if with_published:
        quoted = published.load_published()
        built = [published.add_published(t, quoted) for t in built]
    report = Report(out, built, "")
    out.mkdir(parents=True, exist_ok=True)
    sections = [f"# Report of {', '.join(str(f) for f in folders)}\n", *_header_lines(found)]
    sections += [render.markdown_section(t) for t in built] or ["no finished jobs\n"]
    ablations = plots.ablation_sets(df) if not df.empty else []
    for ablation in ablations:
        sections.append(f"## Ablation: {ablation['method']} ({ablation['protocol']}, {ablation['dataset']})\n\n"
                        + rows.to_markdown(plots.ablation_table(ablation, annotated=True)) + "\n\n"
                        + plots.ABLATION_NOTE + "\n")
    if draw and not df.empty:
        report.written += _draw(report, df, ablations, found, curves)
        images = [p for p in report.written if p.suffix == ".png"]
        if images:
            sections.append("## Figures\n\n" + "\n".join(f"- [{p.relative_to(out)}]({p.relative_to(out)})"
                                                          for p in images) + "\n")
    if found.failures:
        sections.append(rows.failures_markdown(found.failures))
    report.markdown = "\n".join(sections)
    if "md" in formats:
        report.written.append(_write(out / "report.md", report.markdown))
    if "csv" in formats:
        report.written.append(_write(out / "per_job.csv", aggregate.per_job_frame(found.records).to_csv(index=False)))
        for t in built:
            report.written.append(_write(out / "tables" / f"{t.slug}.csv", render.to_csv(t)))
    if "latex" in formats:
        report.written.append(_write(out / "report.tex", latex.to_document(built)))
        for t in built:
            report.written.append(_write(out / "tables" / f"{t.slug}.tex", latex.to_tabular(t)))
    return report


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path


def _header_lines(found: aggregate.Collected) -> list[str]:
    lines = [f"{len(found.records)} finished job(s), {len(found.failures)} failed."]
    if found.duplicates:
        lines.append(f"{found.duplicates} identical copies of jobs found in several folders were counted once.")
    for conflict in found.conflicts:
        lines.append(f"**Conflict**: {conflict}.")
    lines.append("Bold: best measured value per column. Std over runs (splits x seeds; sample std, ddof 1) after "
                 "±, when n > 1. "
                 + noise.SE_LEGEND + " "
                 f"Flags: `{aggregate.FLAG_CHANCE}` (novel / zero-shot top-1 within {aggregate.CHANCE_MARGIN:g} "
                 f"points of chance), `{aggregate.FLAG_VIDEOS}` (fewer videos used than listed), "
                 f"`{aggregate.FLAG_PROFILE}` (a profile shortened the schedule: not comparable with papers).")
    return ["\n".join(lines) + "\n"]


def _draw(report: Report, df, ablations, found: aggregate.Collected, curves: bool) -> list[Path]:
    folder = report.out / "plots"
    written = []
    for t in report.tables:
        written += plots.params_plot(t, folder / f"params_{t.slug}")
    several = len(ablations) > 1
    for ablation in ablations:
        written += plots.ablation_plot(ablation, plots.ablation_stem(folder, ablation, several))
    if curves:
        for record in found.records:
            job_dir = found.folders.get(record["job_id"])
            if job_dir is not None:
                written += plots.training_curves(job_dir, folder / "curves" / record["job_id"], record["job_id"])
    return written
