"""Metrics as text: the one formatter the CLI, logs, figures, the worker and the viewers share."""

from __future__ import annotations


def summary_row(record) -> dict:
    """A flat row for tables: the numbers a reader compares between steps."""
    metrics = record.metrics
    tre, tre_box = metrics.get("tre_mm") or {}, metrics.get("tre_mm_box") or {}
    return {
        "step": record.kind,
        "iterations": record.params.get("iterations", 0),
        "seconds": record.seconds,
        "rmse_hu": metrics["rmse_hu"],
        "rmse_hu_box": metrics.get("rmse_hu_box"),
        "tre_mm": tre.get("mean"),
        "tre_mm_box": tre_box.get("mean"),
        "folding_fraction": metrics["folding_fraction"],
        "outside_change_mm": metrics.get("outside_change_mm"),
    }


def summary_text(metrics: dict) -> str:
    """One line: 'RMSE 52.1 HU, box 60.2 HU, TRE 1.79 mm, box TRE 3.09 mm' (what applies)."""
    parts = [f"RMSE {metrics['rmse_hu']:.1f} HU"]
    if metrics.get("rmse_hu_box") is not None:
        parts.append(f"box {metrics['rmse_hu_box']:.1f} HU")
    if metrics.get("tre_mm"):
        parts.append(f"TRE {metrics['tre_mm']['mean']:.2f} mm")
    if metrics.get("tre_mm_box"):
        parts.append(f"box TRE {metrics['tre_mm_box']['mean']:.2f} mm")
    return ", ".join(parts)


def format_table(rows: list[dict]) -> str:
    """A plain-text table that reads well in a terminal and in a README code block."""
    if not rows:
        return "(no steps)"
    columns = list(rows[0])
    cells = [[format_number(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def format_number(value) -> str:
    """'-' for None, 4 decimals below 1, 2 above: millimetres and HU read alike everywhere."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1 and value != 0 else f"{value:.2f}"
    return str(value)
