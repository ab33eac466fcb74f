"""Recorded echoes against simulated ones, statistic by statistic (the library of `avs-depth echo-stats`).

For each statistic of avs_depth_core.audio.echo_stats: the recordings' value (the median over them when there are
several), the 5th, 50th and 95th percentiles over the simulated recordings where it could be measured, and whether the
recorded value lies inside the simulated 5-95 % range. Simulated recordings can be limited to a distance range (the
median of their depth map), so a recording made a metre from the furniture is compared with simulated echoes from a
similar distance. Writes echo_stats.json, stats_vs_sim.png (each recorded statistic over the simulated histogram) and
one echoes_<k>.png per recording (spectrograms and energy decay curves beside those of the nearest simulated echo).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from avs_depth_core import files
from avs_depth_core.audio.echo_stats import (
    EchoStatsSettings,
    _band,
    decay_noise,
    echo_stats,
    find_direct_path,
    schroeder_curve,
    stat_names,
)
from avs_depth_core.audio.window import echo_window_samples
from avs_depth_core.data.echo_sources import EchoRecord


@dataclass(frozen=True)
class StatRow:
    name: str
    recorded: float
    sim_p5: float
    sim_median: float
    sim_p95: float
    sim_count: int          # simulated recordings where the statistic could be measured
    inside: bool | None     # recorded value within [sim_p5, sim_p95]; None without a simulated distribution


def measure(records: Sequence[EchoRecord], settings: EchoStatsSettings) -> list[dict[str, float]]:
    out = []
    for record in records:
        try:
            out.append(echo_stats(record.samples, record.sample_rate, record.emission_offset, settings))
        except ValueError as err:
            raise ValueError(f"{record.name}: {err}") from None
    return out


def within_distance(records: Sequence[EchoRecord], distance_range: tuple[float, float] | None) -> list[int]:
    """Indices of the records whose depth median lies in [lo, hi] metres (every record without a range)."""
    if distance_range is None:
        return list(range(len(records)))
    lo, hi = distance_range
    return [i for i, r in enumerate(records) if lo <= r.depth_median_m <= hi]


def compare(recorded: Sequence[dict[str, float]], simulated: Sequence[dict[str, float]],
            names: Sequence[str]) -> list[StatRow]:
    rows = []
    for name in names:
        real = np.array([s[name] for s in recorded], dtype=np.float64)
        value = float(np.nanmedian(real)) if np.isfinite(real).any() else math.nan
        sim = np.array([s[name] for s in simulated], dtype=np.float64)
        sim = sim[np.isfinite(sim)]
        if len(sim) == 0:
            rows.append(StatRow(name, value, math.nan, math.nan, math.nan, 0, None))
            continue
        p5, p50, p95 = (float(v) for v in np.percentile(sim, [5, 50, 95]))
        inside = None if math.isnan(value) else bool(p5 <= value <= p95)
        rows.append(StatRow(name, value, p5, p50, p95, len(sim), inside))
    return rows


def format_table(rows: Sequence[StatRow]) -> str:
    lines = [f"{'statistic':30s} {'recorded':>10s} {'sim 5%':>10s} {'sim 50%':>10s} {'sim 95%':>10s} {'n sim':>6s}  inside"]
    for r in rows:
        verdict = "-" if r.inside is None else ("yes" if r.inside else "NO")
        lines.append(f"{r.name:30s} {r.recorded:10.4g} {r.sim_p5:10.4g} {r.sim_median:10.4g} {r.sim_p95:10.4g} "
                     f"{r.sim_count:6d}  {verdict}")
    compared = [r for r in rows if r.inside is not None]
    if compared:
        lines.append(f"{sum(r.inside for r in compared)} of {len(compared)} statistics inside the simulated 5-95 % range")
    return "\n".join(lines)


@dataclass(frozen=True)
class EchoStatsReport:
    settings: EchoStatsSettings
    recorded: list[EchoRecord]
    recorded_stats: list[dict[str, float]]
    simulated: list[EchoRecord]             # those within the distance range
    simulated_stats: list[dict[str, float]]
    distance_range: tuple[float, float] | None
    rows: list[StatRow]

    def table(self) -> str:
        return format_table(self.rows)

    def to_json(self) -> dict:
        def clean(x: float) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

        settings = asdict(self.settings)
        settings["chirp"] = asdict(self.settings.chirp)
        return {
            "settings": settings,
            "distance_range_m": list(self.distance_range) if self.distance_range else None,
            "recorded": [{"name": r.name, "emission_offset": r.emission_offset, "depth_median_m": clean(r.depth_median_m),
                          "stats": {k: clean(v) for k, v in s.items()}} for r, s in zip(self.recorded, self.recorded_stats,
                                                                                        strict=True)],
            "simulated_count": len(self.simulated),
            "comparison": [{k: clean(v) for k, v in asdict(row).items()} for row in self.rows],
        }


def check_windows(records: Sequence[EchoRecord], settings: EchoStatsSettings) -> None:
    """Every recording must hold the whole analysis window after its emission, or its decay and floor would be measured
    over a shorter time than the others'."""
    need = echo_window_samples(settings.max_depth, settings.chirp.sample_rate, settings.speed_of_sound) \
        + settings.chirp.num_samples
    short = [r for r in records if r.samples.shape[1] - r.emission_offset < need]
    if short:
        held = min(r.samples.shape[1] - r.emission_offset for r in records) - settings.chirp.num_samples
        fits = held / settings.chirp.sample_rate * settings.speed_of_sound / 2
        raise ValueError(f"{short[0].name}: {short[0].samples.shape[1] - short[0].emission_offset} samples after the "
                         f"emission, the analysis window for --max-depth {settings.max_depth:g} needs {need}; compare "
                         f"with --max-depth {math.floor(fits * 10) / 10:g} or less ({len(short)} recording(s) too short)")


def build_report(recorded: Sequence[EchoRecord], simulated: Sequence[EchoRecord], settings: EchoStatsSettings,
                 distance_range: tuple[float, float] | None = None) -> EchoStatsReport:
    """Measure both sets and compare them; simulated recordings outside distance_range are left out."""
    if not recorded:
        raise ValueError("no recordings to measure")
    keep = within_distance(simulated, distance_range)
    if simulated and not keep:
        depths = [r.depth_median_m for r in simulated if math.isfinite(r.depth_median_m)]
        span = f"{min(depths):.2f}-{max(depths):.2f} m" if depths else "none has a depth map"
        raise ValueError(f"no simulated echo within --distance-range {distance_range[0]} {distance_range[1]} m "
                         f"(their depth medians: {span})")
    sim = [simulated[i] for i in keep]
    check_windows([*recorded, *sim], settings)
    recorded_stats, sim_stats = measure(recorded, settings), measure(sim, settings)
    rows = compare(recorded_stats, sim_stats, stat_names(settings))
    return EchoStatsReport(settings, list(recorded), recorded_stats, sim, sim_stats, distance_range, rows)


def _nearest(records: Sequence[EchoRecord], depth: float) -> int:
    if not math.isfinite(depth):
        return 0
    gaps = [abs(r.depth_median_m - depth) if math.isfinite(r.depth_median_m) else math.inf for r in records]
    return int(np.argmin(gaps))


def _analysis_window(record: EchoRecord, settings: EchoStatsSettings) -> np.ndarray:
    stop = record.emission_offset + echo_window_samples(settings.max_depth, record.sample_rate, settings.speed_of_sound)
    return record.samples[:, record.emission_offset: stop + settings.chirp.num_samples].astype(np.float64)


def plot_recordings(path: Path, record: EchoRecord, sim: EchoRecord | None, settings: EchoStatsSettings) -> Path:
    """Spectrograms (left ear, dB) over the energy decay curves per octave band: the recording and a simulated echo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(record, "recorded")] + ([(sim, "simulated")] if sim is not None else [])
    fig, axes = plt.subplots(2, len(shown), figsize=(6 * len(shown), 7), squeeze=False)
    for col, (rec, label) in enumerate(shown):
        x = _analysis_window(rec, settings)
        fs = rec.sample_rate
        ax = axes[0, col]
        ax.specgram(x[0], NFFT=256, Fs=fs, noverlap=192, cmap="magma", vmin=-140, vmax=-20)
        depth = f", depth median {rec.depth_median_m:.2f} m" if math.isfinite(rec.depth_median_m) else ""
        ax.set_title(f"{label}: {Path(rec.name).name}{depth}", fontsize=9)
        ax.set_xlabel("s after emission")
        ax.set_ylabel("Hz")
        direct = find_direct_path(rec.samples.astype(np.float64), fs, rec.emission_offset, settings)
        stop = rec.emission_offset + x.shape[1]
        ax = axes[1, col]
        for centre in (None, *settings.decay_bands_hz):
            band = _band(rec.samples.astype(np.float64), fs, centre)
            curve = schroeder_curve(band[:, direct.end:stop], decay_noise(band, fs, direct, stop))
            ax.plot(np.arange(len(curve)) / fs * 1000, curve, lw=1,
                    label="broadband" if centre is None else f"{int(centre)} Hz")
        ax.set_ylim(-60, 2)
        ax.set_xlabel("ms after the direct chirp")
        ax.set_ylabel("energy decay, dB")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    files.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def plot_statistics(path: Path, report: EchoStatsReport) -> Path:
    """One panel per statistic: the simulated histogram, its 5-95 % range shaded, the recorded value as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.rows
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(rows) / cols), cols, figsize=(4 * cols, 2.6 * math.ceil(len(rows) / cols)),
                             squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        sim = np.array([s[row.name] for s in report.simulated_stats], dtype=np.float64)
        sim = sim[np.isfinite(sim)]
        if len(sim):
            ax.hist(sim, bins=20, color="0.6")
            ax.axvspan(row.sim_p5, row.sim_p95, color="tab:blue", alpha=0.15)
        if math.isfinite(row.recorded):
            ax.axvline(row.recorded, color="tab:green" if row.inside else "tab:red", lw=2)
        verdict = "" if row.inside is None else (" (inside)" if row.inside else " (OUTSIDE)")
        ax.set_title(f"{row.name}{verdict}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    fig.tight_layout()
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, report: EchoStatsReport, figures: int = 1) -> list[Path]:
    """echo_stats.json, table.txt, stats_vs_sim.png (with a simulated set) and echoes_<k>.png for the first `figures`
    recordings, written together into the folder `out`."""
    written = []
    with files.staged_outputs(out) as stage:
        files.write_text(stage / "echo_stats.json", json.dumps(report.to_json(), indent=1))
        files.write_text(stage / "table.txt", report.table() + "\n")
        written += [out / "echo_stats.json", out / "table.txt"]
        if report.simulated_stats:
            plot_statistics(stage / "stats_vs_sim.png", report)
            written.append(out / "stats_vs_sim.png")
        for k, record in enumerate(report.recorded[:figures]):
            sim = report.simulated[_nearest(report.simulated, record.depth_median_m)] if report.simulated else None
            plot_recordings(stage / f"echoes_{k}.png", record, sim, report.settings)
            written.append(out / f"echoes_{k}.png")
    return written
