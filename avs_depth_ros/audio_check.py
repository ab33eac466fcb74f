"""`avs-depth-ros audio-check`: what to run first on a robot, before echo_node. ROS-free.

It lists the audio devices, plays chirps on the same full-duplex stream echo_node uses (DuplexEchoRecorder, so what it
measures is what the node will get), and reports: the loop delay (output sample to the direct path on the input) and
its spread, what the host API claims that delay is, the direct path's level per channel, the noise floor and SNR,
clipping, and a suggested gain. It writes the figures and the settings for echo_node to a YAML file; echo_node reads it
with `calibration_file:=<file>` (its `echo_node` settings replace the node's parameters).
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from avs_depth_core.audio.chirp import ChirpSpec, synthesize_chirp
from avs_depth_core.data.messages import CLIP_LEVEL
from avs_depth_ros.duplex import AudioUnavailableError, DuplexEchoRecorder, EchoCapture, import_sounddevice
from avs_depth_ros.params import ECHO_NODE, validate

TARGET_DIRECT_PEAK = 0.68  # suggested gain puts the direct path at the level of BatVision's recordings (0.6-0.75,
# method_spec section 4), which the models were trained on: their echo spectrograms are not level-normalised
MIN_SNR_DB = 20.0
NOISE_S = 0.4  # input before the first chirp used for the noise floor
# echo_node settings audio-check writes (and a calibration file may hold)
CALIBRATION_KEYS = ("device", "sample_rate", "latency", "output_latency", "blocksize", "gain", "input_channels",
                    "output_channels", "mic_speaker_distance_m", "correct_with_direct_path")
SPECS = {spec.name: spec for spec in ECHO_NODE}


# -------------------------------------------------------------------------------------------- the node's side
def load_calibration(path: str | Path) -> dict[str, Any]:
    """The audio-check YAML: {'audio_check': figures, 'echo_node': settings}, checked key by key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration_file {path}: not found (write one with `avs-depth-ros audio-check --out "
                                f"{path}`)")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("echo_node"), dict):
        raise ValueError(f"calibration_file {path}: expected a mapping with an 'echo_node' section of settings")
    for key, value in data["echo_node"].items():
        if key not in CALIBRATION_KEYS:
            raise ValueError(f"calibration_file {path}: echo_node.{key} is not a setting audio-check writes; expected "
                             f"one of {', '.join(CALIBRATION_KEYS)}")
        default = SPECS[key].default
        kind = float if isinstance(default, float) else type(default)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int) and not isinstance(value, bool)) \
            or (SPECS[key].dynamic and isinstance(value, str | float | int))
        if not ok:
            raise ValueError(f"calibration_file {path}: echo_node.{key} is {value!r}; expected a {kind.__name__}")
    return data


def apply_calibration(params: dict[str, Any], path: str | Path, log: Any = print) -> dict[str, Any]:
    """echo_node's parameters with the calibration's settings in place (validated like parameters), logged."""
    data = load_calibration(path)
    settings = {k: float(v) if isinstance(SPECS[k].default, float) else v for k, v in data["echo_node"].items()}
    merged = validate("echo_node", ECHO_NODE, {**params, **settings})
    changed = [f"{k} {params[k]!r} -> {v!r}" for k, v in settings.items() if params[k] != v]
    figures = data.get("audio_check") or {}
    log(f"calibration {path} (audio-check of {figures.get('measured_at', 'unknown date')}: loop delay "
        f"{figures.get('loop_delay_ms', {}).get('median', '?')} ms, SNR {figures.get('snr_db', '?')} dB); "
        f"{'; '.join(changed) if changed else 'no parameter changed'}")
    return merged


# -------------------------------------------------------------------------------------------- the measurement
def measure(settings: dict[str, Any], chirps: int, sounddevice_module: Any = None,
            progress: Any = print) -> dict[str, Any]:
    """Play `chirps` chirps with echo_node's settings; the figures (see module doc)."""
    spec = ChirpSpec(settings["chirp_start_hz"], settings["chirp_end_hz"], settings["chirp_duration_s"],
                     settings["sample_rate"], settings["chirp_method"])
    chirp = synthesize_chirp(spec)
    rec = DuplexEchoRecorder(
        chirp=chirp, sample_rate=settings["sample_rate"], chirp_rate=settings["chirp_rate"],
        window_s=settings["window_s"], pre_roll_s=settings["pre_roll_s"], input_channels=list(settings["input_channels"]),
        output_channels=settings["output_channels"], gain=settings["gain"], device=settings["device"],
        blocksize=settings["blocksize"], latency=settings["latency"], output_latency=settings["output_latency"],
        direct_path_s=settings["mic_speaker_distance_m"] / settings["speed_of_sound"],
        tolerance_s=settings["direct_path_tolerance_ms"] / 1000.0, correct_with_direct_path=True,
        realtime_priority=settings["realtime_priority"], sounddevice_module=sounddevice_module)
    rec.start()
    captures: list[EchoCapture] = []
    noise: np.ndarray | None = None
    deadline = time.monotonic() + 10.0 + 2.0 * chirps / settings["chirp_rate"]
    try:
        while len(captures) < chirps and time.monotonic() < deadline:
            time.sleep(0.02)
            captures += rec.poll()
            if noise is None and rec.first_emission is not None and rec.recorded_until() > rec.first_emission:
                noise = rec.recorded(rec.first_emission - int(NOISE_S * rec.fs), rec.first_emission)
        progress(f"  {len(captures)} of {chirps} chirps recorded")
    finally:
        rec.close()
    if not captures:
        raise AudioUnavailableError(f"no chirp came back within {deadline - time.monotonic() + 10:.0f} s (stream "
                                    f"{'never settled' if rec.first_emission is None else 'settled'}; xruns "
                                    f"{rec.stats.xruns or 'none'})")
    return figures(rec, captures, chirp, noise, settings, chirps)


def figures(rec: DuplexEchoRecorder, captures: list[EchoCapture], chirp: np.ndarray, noise: np.ndarray | None,
            settings: dict[str, Any], chirps: int) -> dict[str, Any]:
    fs, n = rec.fs, len(chirp)
    ms = 1000.0 / fs
    heard = [c for c in captures if math.isfinite(c.direct_path_error_ms)]
    direct_at = rec.pre_roll + rec.direct
    loop = rec.loop.value if rec.loop.value is not None else float("nan")
    # output sample -> the direct path on the input, per chirp (the lock plus each chirp's own deviation)
    delays = np.array([loop + rec.direct + c.direct_path_error_ms / ms for c in heard]) if heard else np.array([np.nan])
    windows = np.concatenate([c.samples for c in captures], axis=1)
    direct = np.stack([c.samples[:, direct_at:direct_at + n] for c in heard]) if heard else np.zeros((1, 2, n))
    direct_peak = np.abs(direct).max(axis=2).mean(axis=0)  # per channel, mean over chirps
    direct_rms = np.sqrt((direct.astype(np.float64) ** 2).mean(axis=(0, 2)))
    noise_rms = np.sqrt((noise.astype(np.float64) ** 2).mean(axis=1)) if noise is not None else np.full(2, np.nan)
    snr = 20 * np.log10(np.maximum(direct_rms, 1e-12) / np.maximum(noise_rms, 1e-12))
    clipped = int((np.abs(windows) >= CLIP_LEVEL).sum())
    reported_ms = rec.reported_delay_samples * ms
    gain = float(settings["gain"])
    peak = float(direct_peak.max())
    suggested = gain * TARGET_DIRECT_PEAK / peak if peak > 0 else 1.0
    if clipped:
        suggested = min(suggested, 0.7 * gain)
    return {
        "measured_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(), "device": settings["device"] or "(default)", "sample_rate": fs,
        "latency": settings["latency"], "chirps_played": chirps, "chirps_recorded": len(captures),
        "direct_path_found": len(heard),
        "loop_delay_ms": {"median": _r(np.nanmedian(delays) * ms), "min": _r(np.nanmin(delays) * ms),
                          "max": _r(np.nanmax(delays) * ms), "spread": _r((np.nanmax(delays) - np.nanmin(delays)) * ms)},
        "host_reported_delay_ms": _r(reported_ms),
        "host_time_error_ms": _r(reported_ms - loop * ms),  # DAC - ADC minus the measured delay without the air
        "direct_path_peak": [_r(v) for v in direct_peak], "noise_rms": [_r(v, 6) for v in noise_rms],
        "snr_db": [_r(v, 1) for v in snr], "clipped_samples": clipped, "peak_level": _r(np.abs(windows).max()),
        "gain": gain, "suggested_gain": _r(float(np.clip(suggested, 0.01, 1.0)), 2),
        "xruns": dict(rec.stats.xruns), "lost_windows": dict(rec.stats.lost_windows),
    }


def _r(value: float, digits: int = 3) -> float:
    return round(float(value), digits) if math.isfinite(value) else float("nan")


def verdict(fig: dict[str, Any]) -> list[str]:
    """Problems worth fixing before running echo_node; empty when the setup is fine."""
    problems = []
    if fig["direct_path_found"] < 0.8 * fig["chirps_recorded"]:
        problems.append(f"the direct path was found in only {fig['direct_path_found']} of {fig['chirps_recorded']} "
                        f"chirps: speaker muted, gain too low, or microphones on the wrong input channels")
    if fig["clipped_samples"]:
        problems.append(f"{fig['clipped_samples']} samples clipped: lower the gain (suggested {fig['suggested_gain']})")
    if min(fig["snr_db"]) < MIN_SNR_DB:
        problems.append(f"SNR {min(fig['snr_db']):.1f} dB is below {MIN_SNR_DB:g} dB: raise the gain or the "
                        f"speaker volume, or lower the microphone noise")
    if fig["loop_delay_ms"]["spread"] > 1.0:
        problems.append(f"the loop delay spread over {fig['loop_delay_ms']['spread']} ms: the stream underruns "
                        f"(xruns {fig['xruns'] or 'none'}); try latency: high or 0.1")
    if fig["xruns"]:
        problems.append(f"xruns during the check: {fig['xruns']}; try a larger latency (0.1)")
    return problems


# -------------------------------------------------------------------------------------------- the command
def add_parser(sub: Any) -> None:
    p = sub.add_parser("audio-check", help="check the speaker and microphones; write a calibration YAML for echo_node")
    p.add_argument("--params-file", help="take echo_node's settings from this parameter file (default: "
                   "config/avs_depth.yaml)")
    p.add_argument("--device", help="PortAudio device (index or part of its name); default: the params file's")
    p.add_argument("--latency", help="PortAudio latency: low, high or seconds")
    p.add_argument("--gain", type=float, help="chirp amplitude, full scale = 1")
    p.add_argument("--mic-speaker-distance", type=float, help="speaker-to-microphone distance, m")
    p.add_argument("--chirps", type=int, default=30, help="chirps to play (default 30)")
    p.add_argument("--out", default="audio_check.yaml", help="calibration YAML to write (default audio_check.yaml)")
    p.add_argument("--list-only", action="store_true", help="list the devices and stop")
    p.add_argument("--debug", action="store_true", help="on an error, print the traceback too")


def settings_from(args: argparse.Namespace, default_params_file: Path) -> dict[str, Any]:
    params_file = Path(args.params_file) if args.params_file else default_params_file
    if not params_file.is_file():
        raise FileNotFoundError(f"{params_file}: params file not found")
    config = yaml.safe_load(params_file.read_text()) or {}
    given = (config.get("echo_node") or {}).get("ros__parameters") or {}
    unknown = sorted(set(given) - set(SPECS))
    if unknown:
        raise ValueError(f"{params_file}: echo_node has unknown parameters {unknown}")
    settings = {**{s.name: s.default for s in ECHO_NODE}, **given}
    for key, value in (("device", args.device), ("latency", args.latency), ("gain", args.gain),
                       ("mic_speaker_distance_m", args.mic_speaker_distance)):
        if value is not None:
            settings[key] = value
    if args.chirps < 3:
        raise ValueError(f"--chirps must be at least 3, got {args.chirps}")
    return validate("echo_node", ECHO_NODE, settings)


def run(args: argparse.Namespace, default_params_file: Path, sounddevice_module: Any = None) -> int:
    settings = settings_from(args, default_params_file)
    try:
        sd = sounddevice_module or import_sounddevice()
        print(f"audio devices (PortAudio):\n{sd.query_devices()}", flush=True)
    except AudioUnavailableError as err:
        print(f"audio-check: error: {err}", file=sys.stderr)
        return 1
    if args.list_only:
        return 0
    print(f"playing {args.chirps} chirps on {settings['device'] or 'the default device'} (gain {settings['gain']:g}, "
          f"latency {settings['latency']}) ...", flush=True)
    try:
        fig = measure(settings, args.chirps, sd)
    except AudioUnavailableError as err:
        print(f"audio-check: error: {err}", file=sys.stderr)
        return 1
    problems = verdict(fig)
    fig["problems"] = problems
    node = {k: settings[k] for k in CALIBRATION_KEYS}
    node["gain"] = fig["suggested_gain"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Written by `avs-depth-ros audio-check`. echo_node reads it with calibration_file:=" + str(out) +
                   "\n# (its echo_node settings replace the node's parameters; the figures are logged).\n" +
                   yaml.safe_dump({"audio_check": fig, "echo_node": node}, sort_keys=False))
    print(report(fig), flush=True)
    print(f"wrote {out}; run echo_node with calibration_file:={out}", flush=True)
    return 1 if fig["direct_path_found"] == 0 else 0


def report(fig: dict[str, Any]) -> str:
    d = fig["loop_delay_ms"]
    lines = [
        f"chirps: {fig['chirps_recorded']} recorded, direct path in {fig['direct_path_found']}",
        f"loop delay: {d['median']} ms (min {d['min']}, max {d['max']}, spread {d['spread']} ms); the host API "
        f"reports {fig['host_reported_delay_ms']} ms (error {fig['host_time_error_ms']} ms)",
        f"direct path peak {fig['direct_path_peak']} (left, right); noise RMS {fig['noise_rms']}; SNR {fig['snr_db']} dB",
        f"clipped samples {fig['clipped_samples']}, peak {fig['peak_level']}; gain {fig['gain']:g} -> suggested "
        f"{fig['suggested_gain']:g}",
    ]
    lines += [f"problem: {p}" for p in fig["problems"]] or ["no problems found"]
    return "\n".join(lines)
