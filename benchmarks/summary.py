"""The figures of issue 10's Targets table as measured in this run, figures given for
information (issue 12's read replicas: no target), and the final table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its target; `passed` is None when it was not measured,
    or when the figure is `informative` (no target: neither PASS nor MISS)."""

    name: str
    measured: str
    target: str
    passed: bool | None
    informative: bool = False

    @property
    def verdict(self) -> str:
        if self.informative:
            return "info"
        if self.passed is None:
            return "SKIPPED"
        return "PASS" if self.passed else "MISS"


FIGURES: list[Figure] = []


def record(
    name: str, measured: str, target: str, passed: bool | None, informative: bool = False
) -> Figure:
    """Keep a figure for the summary and return it (sections print it in their own table)."""
    figure = Figure(name, measured, target, passed, informative)
    FIGURES.append(figure)
    return figure


def at_most(name: str, value: float, limit: float, fmt: str = "{:.2f}") -> Figure:
    return record(name, fmt.format(value), "≤ " + fmt.format(limit), value <= limit)


def at_least(name: str, value: float, limit: float, fmt: str = "{:.2f}") -> Figure:
    return record(name, fmt.format(value), "≥ " + fmt.format(limit), value >= limit)


def information(name: str, measured: str) -> Figure:
    """A figure with no target, shown in the summary as "info"."""
    return record(name, measured, "(no target)", None, informative=True)


def not_measured(name: str, target: str, reason: str) -> Figure:
    return record(name, f"skipped: {reason}", target, None)


def print_figures(figures: list[Figure]) -> None:
    print("| figure | measured | target | |")
    print("|---|---|---|---|")
    for figure in figures:
        print(f"| {figure.name} | {figure.measured} | {figure.target} | {figure.verdict} |")


def print_summary() -> None:
    if not FIGURES:
        return
    print(
        "\n## Summary: issue 10's targets, measured side by side in this run "
        "(and figures for information)\n"
    )
    print_figures(FIGURES)
    counts = {v: sum(f.verdict == v for f in FIGURES) for v in ("PASS", "MISS", "SKIPPED", "info")}
    print(
        f"\n{counts['PASS']} PASS, {counts['MISS']} MISS, {counts['SKIPPED']} SKIPPED"
        + (f", {counts['info']} for information (no target)" if counts["info"] else ""),
        flush=True,
    )
