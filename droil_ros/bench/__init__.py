"""Benchmarks (``droil bench NAME``): raw JSON, a Markdown table, the machine and versions."""

from __future__ import annotations

import csv
import json
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

PACKAGES = ("numpy", "mujoco", "gymnasium", "scipy", "torch", "onnxruntime")


def machine_info() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "versions": versions,
    }


def cpu_times() -> list[int]:
    """The machine's cumulative CPU times (/proc/stat, clock ticks; empty where there is none)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return []


def steal_share(start: list[int], end: list[int]) -> float | None:
    """Share of CPU time the hypervisor gave to other guests between two cpu_times(): on a VM, a
    loop can miss deadlines while no process of this machine runs."""
    if len(start) < 8 or len(end) < 8:
        return None
    total = sum(end[:8]) - sum(start[:8])
    return (end[7] - start[7]) / total if total > 0 else None


ADVERSARY = {"w_loss_ratio": "E_w[l]/E[l]", "w_loss_corr": "corr(w, l)", "w_ess": "ESS", "w_max": "w_max"}


def adversary_summary(log: Path | None) -> dict | None:
    """A reweighting learner's adversary diagnostics (algos.common.adversary_diagnostics) from its
    training CSV: the median over the second half of the logged steps of the seed means. None for
    learners without weights (or without a log)."""
    if log is None or not Path(log).is_file():
        return None
    with open(log, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "w_loss_ratio" not in rows[0]:
        return None
    late = rows[len(rows) // 2:]
    return {k: float(np.median([float(r[k]) for r in late])) for k in ADVERSARY}


def adversary_table(summaries: dict[str, dict | None]) -> str:
    """Markdown: one row per learner that has weights."""
    rows = [[name, *[f"{v[k]:.2f}" for k in ADVERSARY]] for name, v in summaries.items() if v]
    return markdown_table(["learner", *ADVERSARY.values()], rows) if rows else ""


def mean_ci(values, confidence: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """The mean of ``values`` (one per training seed) and its bootstrap confidence interval
    (percentile, 10,000 resamples, fixed seed: the same numbers on every run); NaN bounds for
    fewer than two values, the mean itself where all are equal."""
    from scipy.stats import bootstrap

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if values.size else float("nan")
    if values.size < 2:
        return mean, float("nan"), float("nan")
    if np.all(values == values[0]):
        return mean, mean, mean
    ci = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=10_000,
                   method="percentile", random_state=np.random.default_rng(seed)).confidence_interval
    return mean, float(ci.low), float(ci.high)


def format_ci(mean: float, low: float, high: float, digits: int = 0) -> str:
    if np.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path
