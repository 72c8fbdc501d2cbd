"""``medley whatif --commitment``: the commitment what-if's tables and plot (the search is
:func:`planner.whatif.commitment.commitment_whatif`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from planner.cli.common import png_or_svg
from planner.whatif.commitment import HOURS_PER_MONTH, CommitmentReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Rows = tuple[list[str], list[list[str]]]


def level_rows(report: CommitmentReport) -> Rows:
    """One row per load level: its hours, the factor it is planned at, its plan's $/h and devices."""
    head = ["level", "hours", "rate ×", "$/h (no commitment)", "devices by pool"]
    rows = []
    for i, lv in enumerate(report.levels, 1):
        scale = sorted(set(lv.scale.values()))
        factor = f"{scale[0]:.2f}" if len(scale) == 1 else ", ".join(f"{s} {f:.2f}" for s, f in lv.scale.items())
        rows.append([str(i), f"{lv.hours_share:.0%}", factor, f"{lv.marginal_usd_per_hour:,.2f}",
                     ", ".join(f"{p} {n}" for p, n in sorted(lv.devices_by_pool.items())) or "-"])
    return head, rows


def curve_rows(report: CommitmentReport) -> Rows:
    """The expected bill at every breakpoint of the commitment."""
    head = ["commitment $/h", "expected $/h", "expected $/month", ""]
    rows = [[f"{p.commitment_usd_per_hour:,.2f}", f"{p.expected_usd_per_hour:,.2f}",
             f"{p.expected_usd_per_hour * HOURS_PER_MONTH:,.0f}",
             "best" if p.commitment_usd_per_hour == report.best_commitment_usd_per_hour else ""]
            for p in report.curve]
    return head, rows


def summary_line(report: CommitmentReport) -> str:
    """The answer in one line."""
    line = (f"best commitment ${report.best_commitment_usd_per_hour:,.2f}/h over {report.hours} hours "
            f"({report.forecast}): expected ${report.best_usd_per_hour:,.2f}/h against "
            f"${report.on_demand_usd_per_hour:,.2f}/h with none")
    if report.best_replanned_usd_per_hour is not None:
        line += f"; ${report.best_replanned_usd_per_hour:,.2f}/h with each level planned for it"
    return line + f"; saves ${report.monthly_saving_usd:,.0f} a month"


def commitment_figure(report: CommitmentReport) -> Figure:
    """The expected bill against the commitment, the best one marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    xs = [p.commitment_usd_per_hour for p in report.curve]
    ax.plot(xs, [p.expected_usd_per_hour for p in report.curve], marker="o", label="expected bill")
    ax.axvline(report.best_commitment_usd_per_hour, color="tab:green", linestyle="--",
               label=f"best: ${report.best_commitment_usd_per_hour:,.2f}/h")
    ax.set_xlabel("commitment $/h")
    ax.set_ylabel("expected $ per hour")
    ax.set_title(f"{report.fleet}: commitment over {report.hours} hours")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    return fig


def write_commitment_plot(report: CommitmentReport, path: Path) -> None:
    """PNG, or an SVG inside a small HTML page."""
    svg = png_or_svg(commitment_figure(report), path)
    if svg is None:
        return
    import html

    title = html.escape(summary_line(report))
    path.write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
                    f"<p>{title}</p>\n{svg}\n</body></html>\n", encoding="utf-8")
