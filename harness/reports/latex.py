"""A `ReportTable` as a booktabs `tabular` (one per table), and a minimal document holding all
of them: `\\documentclass{article}` + `booktabs` and `graphicx` (to fit wide tables), nothing else, so it compiles anywhere."""
from __future__ import annotations

from harness.reports.noise import MARK
from harness.reports.render import cells
from harness.reports.tables import ReportTable

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}

_PM = "\x00PM\x00"  # placeholder that survives escaping, becomes $\pm$


def escape(text: str) -> str:
    """TeX-escape plain text (method names such as `st_adapter`, `msta[rank=8]`, `%`)."""
    out = "".join(_ESCAPES.get(ch, ch) for ch in text)
    return out.replace("Δ", r"$\Delta$").replace(_PM, r"$\pm$").replace("±", r"$\pm$").replace("≈", r"$\approx$")


def to_tabular(table: ReportTable) -> str:
    """`\\begin{tabular}...\\end{tabular}`: text columns left, numbers right, a rule between the
    measured rows and the quoted ones."""
    marker = "\x00B\x00"
    header, rows = cells(table, lambda t: f"{marker}{t}{marker}", _PM)
    align = "".join("l" if i == 0 or col in ("Source", "Flags", "Eval", "Trained on") else "r"
                    for i, col in enumerate(header))
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(escape(h) for h in header) + r" \\",
             r"\midrule"]
    quoted = list(table.frame["Quoted"].astype(bool))
    for i, row in enumerate(rows):
        if quoted[i] and (i == 0 or not quoted[i - 1]):
            lines.append(r"\midrule")
        texts = []
        for cell in row:
            text = escape(cell)
            if marker in cell:
                text = r"\textbf{" + escape(cell.replace(marker, "")) + "}"
            texts.append(text)
        lines.append(" & ".join(texts) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_document(tables: list[ReportTable]) -> str:
    """Every table in its own `table` float with its title as caption."""
    parts = [r"\documentclass{article}", r"\usepackage{booktabs}", r"\usepackage{graphicx}",
             r"\begin{document}"]
    for table in tables:
        parts += [r"\begin{table}[ht]", r"\centering", r"\small", rf"\caption{{{escape(table.title)}}}",
                  r"\resizebox{\linewidth}{!}{%", to_tabular(table).rstrip("\n") + "}"]
        parts += [r"\par{\footnotesize " + escape(note.replace("`", "")) + "}"
                  for note in table.notes if note.startswith(f"`{MARK}`")]  # what the mark in the cells means
        parts.append(r"\end{table}")
    parts.append(r"\end{document}")
    return "\n".join(parts) + "\n"
