"""The printed tables of a cross-validation: Table 1 (`format_table`) and the spread across seeds
(`format_spread`), as plain text; their cells (`percent`, `with_interval`, `spread_cell`) are shared with the HTML
report (reporting.report)."""

from __future__ import annotations

import math


def percent(value: float | None) -> str:
    """A rate in [0, 1] as a percentage with one decimal; "n/a" when undefined (None or NaN)."""
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def with_interval(metrics: dict, key: str) -> str:
    """metrics[key] in % with its Wilson 95% interval (metrics["ci95"][key])."""
    low, high = metrics["ci95"][key]
    return f"{percent(metrics[key])} [{percent(low)}–{percent(high)}]"


def format_table(metrics: dict, comparisons: list[dict]) -> str:
    """Plain-text Table 1: OPA, NOPA, OA in % with Wilson 95% intervals, BA, pooled AUROC, McNemar p."""
    p_values = {c["method"]: c["p_value"] for c in comparisons}
    header = (f"{'method':<16} {'OPA % [95% CI]':<20} {'NOPA % [95% CI]':<20} {'OA % [95% CI]':<20} "
              f"{'BA %':>6} {'AUROC*':>7} {'McNemar p':>10}")
    lines = [header, "-" * len(header)]
    for method, m in metrics.items():
        p_value = f"{p_values[method]:.3g}" if method in p_values else "ref" if method == "group-attention" else ""
        auroc = "n/a" if math.isnan(m["auroc"]) else f"{m['auroc']:.3f}"
        lines.append(f"{method:<16} {with_interval(m, 'OPA'):<20} {with_interval(m, 'NOPA'):<20} "
                     f"{with_interval(m, 'OA'):<20} {percent(m['balanced_accuracy']):>6} {auroc:>7} {p_value:>10}")
    lines.append("* AUROC on pooled out-of-fold scores (biased under leave-one-out; see the report).")
    return "\n".join(lines)


def spread_cell(entry: dict) -> str:
    """One metric across seeds (aggregate.spread's entry) as mean ± sd [min–max] in %."""
    sd = "" if entry["sd"] is None else f" ± {percent(entry['sd'])}"
    return f"{percent(entry['mean'])}{sd} [{percent(entry['min'])}–{percent(entry['max'])}]"


SPREAD_COLUMNS = (("OPA", "OPA %"), ("NOPA", "NOPA %"), ("OA", "OA %"), ("balanced_accuracy", "BA %"))


def format_spread(spread: dict) -> str:
    """Plain-text table across seeds: mean ± sd [min–max] in % per method."""
    seeds = next(iter(next(iter(spread.values())).values()))["n_seeds"]
    header = f"{'method':<16} " + " ".join(f"{title + ' mean ± sd [min–max]':<30}" for _, title in SPREAD_COLUMNS)
    lines = [f"across {seeds} seeds:", header, "-" * len(header)]
    for method, entry in spread.items():
        lines.append(f"{method:<16} " + " ".join(f"{spread_cell(entry[key]):<30}" for key, _ in SPREAD_COLUMNS))
    return "\n".join(lines)
