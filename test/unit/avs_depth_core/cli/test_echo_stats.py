"""`avs-depth echo-stats` end to end: a wav against a simulated bag, and its one-line errors."""

from __future__ import annotations

import numpy as np

from avs_depth_core.audio.chirp import BATVISION_CHIRP, synthesize_chirp
from avs_depth_core.audio.wav import write_wav
from avs_depth_core.cli import main


def write_echo(path, delay=300):
    x = 1e-3 * np.random.default_rng(0).standard_normal((2, 9000))
    chirp = synthesize_chirp(BATVISION_CHIRP)
    x[:, delay:delay + len(chirp)] += 0.6 * chirp
    write_wav(path, x, 44_100)
    return path


def test_a_wav_against_a_simulated_bag(tmp_path, capsys):
    bag = tmp_path / "sim"
    assert main(["simulate", "--preset", "bv1", "--sequences", "1", "--frames", "4", "--height", "16", "--width", "32",
                 "--out", str(bag)]) == 0
    wav = write_echo(tmp_path / "echo.wav")
    out = tmp_path / "stats"
    assert main(["echo-stats", str(wav), "--simulated", str(bag), "--distance-range", "0", "12", "--max-depth", "12",
                 "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "direct_delay_ms" in table and "statistics inside the simulated 5-95 % range" in table
    assert {p.name for p in out.iterdir()} == {"echo_stats.json", "table.txt", "stats_vs_sim.png", "echoes_0.png"}


def test_a_wav_alone_prints_its_table(tmp_path, capsys):
    assert main(["echo-stats", str(write_echo(tmp_path / "echo.wav"))]) == 0
    assert "rt60_broadband_s" in capsys.readouterr().out


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    wav = write_echo(tmp_path / "echo.wav")
    assert main(["echo-stats", str(wav), "--emission-offset", "-1"]) == 2
    assert "--emission-offset" in capsys.readouterr().err
    assert main(["echo-stats", str(wav), "--distance-range", "1", "2"]) == 2
    assert "--simulated" in capsys.readouterr().err
    assert main(["echo-stats", str(tmp_path / "none.wav")]) == 2
    assert "not found" in capsys.readouterr().err
