"""A private PulseAudio server for machines without a sound card (tests, `make demo-audio`). ROS-free.

What it builds: PulseAudio with null sinks and no hardware,
its own runtime and state folders and socket, started and stopped by PID. PortAudio (Debian's libportaudio2 has only
the ALSA host API) reaches it through ALSA's `pulse` plugin (libasound2-plugins), so echo_node runs on its real
sounddevice path: a full-duplex PortAudio stream whose output comes back on its input.

Layouts:
- loopback: one null sink `avs`; its monitor is the default source, so what is played is recorded (a speaker that
  hears itself, no room).
- room: two null sinks. `avs_speaker` is the default sink (echo_node's chirp goes there); `avs_mics` (2 channels) has
  its monitor as the default source (echo_node records it). avs_depth_ros.room_loop reads `avs_speaker.monitor`,
  convolves with the simulated room and plays into `avs_mics` (see `room_env`).

Only processes given `client_env()` see the server: without PULSE_SERVER a client finds no device, as on a machine
without audio. The server runs with real-time priority where the system allows it (root: SCHED_RR through its own
`realtime-scheduling`), which keeps it from underrunning when the CPUs are busy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

LAYOUTS = ("loopback", "room")
SPEAKER_SINK = "avs_speaker"
MIC_SINK = "avs_mics"
LOOPBACK_SINK = "avs"
START_TIMEOUT_S = 10.0
INSTALL_HINT = ("install PulseAudio and ALSA's pulse plugin: sudo apt-get install pulseaudio pulseaudio-utils "
                "libasound2-plugins (`make setup` does as root)")


class AudioServerError(RuntimeError):
    """The private server cannot run here (not installed, or it did not start); the message says why."""


def server_script(layout: str, sample_rate: int = 44_100) -> str:
    """The PulseAudio configuration (-F) of a layout: modules only, no hardware detection (it fails in containers)."""
    if layout not in LAYOUTS:
        raise ValueError(f"audio server layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    lines = ["load-module module-native-protocol-unix auth-anonymous=1"]
    if layout == "loopback":
        lines += [_null_sink(LOOPBACK_SINK, sample_rate, "avs_loopback"),
                  f"set-default-sink {LOOPBACK_SINK}", f"set-default-source {LOOPBACK_SINK}.monitor"]
    else:
        lines += [_null_sink(SPEAKER_SINK, sample_rate, "avs_speaker_(room_loop_input)"),
                  _null_sink(MIC_SINK, sample_rate, "avs_microphones_(room_loop_output)"),
                  f"set-default-sink {SPEAKER_SINK}", f"set-default-source {MIC_SINK}.monitor"]
    return "\n".join(lines) + "\n"


def _null_sink(name: str, sample_rate: int, description: str) -> str:
    return (f"load-module module-null-sink sink_name={name} rate={sample_rate} channels=2 "
            f"sink_properties=device.description={description}")


def available() -> str | None:
    """None when a private server can run here; otherwise what is missing."""
    if shutil.which("pulseaudio") is None:
        return f"pulseaudio not found; {INSTALL_HINT}"
    if not any(Path(p).is_file() for p in ("/etc/alsa/conf.d/99-pulse.conf", "/usr/share/alsa/alsa.conf.d/pulse.conf")):
        return f"ALSA's pulse plugin configuration not found; {INSTALL_HINT}"
    return None


class PrivateAudioServer:
    """`with PrivateAudioServer("room") as server:` starts PulseAudio in a private folder; leaving stops it by PID and
    removes the folder (unless it was given). `server.client_env()` is what a client process needs to see it."""

    def __init__(self, layout: str = "loopback", folder: str | Path | None = None, sample_rate: int = 44_100,
                 realtime: bool = True) -> None:
        self.script = server_script(layout, sample_rate)
        self.layout = layout
        self._own_folder = folder is None
        self.folder = Path(tempfile.mkdtemp(prefix="avs_audio_")) if folder is None else Path(folder)
        self.realtime = realtime
        self.process: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.folder / "run" / "pulse" / "native"

    @property
    def log_file(self) -> Path:
        return self.folder / "pulseaudio.log"

    def start(self) -> PrivateAudioServer:
        missing = available()
        if missing is not None:
            raise AudioServerError(missing)
        for sub in ("run", "state"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(self.folder / sub, 0o700)
        (self.folder / "server.pa").write_text(self.script)
        args = ["pulseaudio", "-n", "-F", str(self.folder / "server.pa"), "--exit-idle-time=-1", "--daemonize=no",
                "--use-pid-file=no", "--log-target=stderr", "--disallow-exit"]
        if self.realtime:
            # As root it sets SCHED_RR itself; elsewhere it needs rtkit or an rtprio limit, and carries on without.
            args += ["--realtime=yes", "--high-priority=yes"]
        env = {**os.environ, **self._server_env()}
        env.pop("PULSE_SERVER", None)
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self.log_file.read_text(errors="replace")[-2000:]
                self.stop()
                raise AudioServerError(f"pulseaudio did not start (log {self.log_file}):\n{text}")
            time.sleep(0.02)
        return self

    def _server_env(self) -> dict[str, str]:
        state = str(self.folder / "state")
        return {"XDG_RUNTIME_DIR": str(self.folder / "run"), "PULSE_STATE_PATH": state, "HOME": state,
                "XDG_CONFIG_HOME": state}

    def client_env(self) -> dict[str, str]:
        """Variables for a client of this server (and only this server): socket, cookie, and a private HOME and
        runtime folder so that ALSA's pulse plugin leaves nothing in the real home or /tmp."""
        return {**self._server_env(), "PULSE_SERVER": f"unix:{self.socket}",
                "PULSE_COOKIE": str(self.folder / "state" / ".config" / "pulse" / "cookie")}

    def room_env(self) -> dict[str, str]:
        """client_env for the room loop: it records the speaker sink's monitor and plays into the microphones' sink."""
        if self.layout != "room":
            raise ValueError(f"room_env needs the 'room' layout, this server is {self.layout!r}")
        return {**self.client_env(), "PULSE_SOURCE": f"{SPEAKER_SINK}.monitor", "PULSE_SINK": MIC_SINK}

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """Stop the server by its PID (SIGTERM, then SIGKILL); remove a folder this object made. Its exit status."""
        process, self.process = self.process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout_s)
            code = process.returncode
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
        return code

    def __enter__(self) -> PrivateAudioServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
