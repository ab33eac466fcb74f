"""Parameter tables of the nodes: name, default, description, range, choices. ROS-free, so the YAML and the docs can be
checked against them without rclpy; `declare_parameters` turns a table into declared parameters with descriptors.
The nodes' defaults live here and nowhere else in the ROS layer; the depth pipeline's settings take theirs from
avs_depth_core.pipeline.PipelineSettings, the object the depth node builds its pipeline from.

Every parameter is read-only after start (the nodes configure models, streams and worlds once); set them in
config/avs_depth.yaml or with launch arguments and restart the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avs_depth_core.pipeline_settings import BACKENDS, OUT_OF_RANGE, RELATIVE_KINDS, PipelineSettings

ParamValue = bool | int | float | str | list


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: ParamValue
    description: str
    range: tuple[float, float] | None = None  # inclusive, for int and float parameters
    choices: tuple[str, ...] = ()
    dynamic: bool = False  # takes a number or text alike (latency:=0.1 on the command line is a double)

    def constraints(self) -> str:
        if self.choices:
            return "one of: " + ", ".join(self.choices)
        if self.range is not None:
            return f"{self.range[0]} <= value <= {self.range[1]}"
        return ""


# BatVision chirp: 3 ms linear sweep 20 Hz - 20 kHz at 44.1 kHz (BatVision, AmandineBtto/Batvision-Dataset).
_CHIRP = [
    ParamSpec("chirp_start_hz", 20.0, "chirp sweep start frequency, Hz (BatVision: 20)", (1.0, 96_000.0)),
    ParamSpec("chirp_end_hz", 20_000.0, "chirp sweep end frequency, Hz (BatVision: 20000)", (1.0, 96_000.0)),
    ParamSpec("chirp_duration_s", 0.003, "chirp length, s (BatVision: 0.003)", (0.0001, 0.1)),
    ParamSpec("chirp_method", "linear", "sweep law, as scipy.signal.chirp names it", None,
              ("linear", "quadratic", "logarithmic", "hyperbolic")),
]

ECHO_NODE: list[ParamSpec] = [
    ParamSpec("backend", "sounddevice", "audio backend: the sound card through PortAudio, or the synthetic world "
              "(sim) for machines without audio", None, ("sounddevice", "sim")),
    ParamSpec("device", "", "PortAudio device for the full-duplex stream: an index or part of its name; '' = system "
              "default (list devices with: python -m sounddevice)"),
    ParamSpec("sample_rate", 44_100, "stream sample rate, Hz (BatVision: 44100); must match the model's", (8_000, 192_000)),
    ParamSpec("input_channels", [0, 1], "input channel indices (0-based) recorded as the binaural pair, in channel_order"),
    ParamSpec("channel_order", "left,right", "names of the recorded channels, in the order of input_channels"),
    ParamSpec("output_channels", 1, "number of output channels; the chirp plays on all of them", (1, 32)),
    ParamSpec("gain", 0.5, "chirp amplitude on the output, full scale = 1", (0.0, 1.0)),
    ParamSpec("chirp_rate", 5.0, "chirps per second. A window longer than the chirp period holds the next chirp's "
              "direct path (at 10 Hz with window_s 0.2 it sat 0.1 s into every window, where the simulator's and "
              "BatVision's training windows have returns from 17 m); the unambiguous range is c / (2 chirp_rate): "
              "5 Hz covers BV2's 30 m", (0.5, 50.0)),
    *_CHIRP,
    ParamSpec("window_s", 0.2, "recorded echo window after emission, s; must cover the round trip to the model's "
              "max_depth (BV2, 30 m at 343 m/s: 0.175 s)", (0.005, 1.0)),
    ParamSpec("pre_roll_s", 0.002, "samples kept before the emission, s (emission_offset = pre_roll_s * sample_rate)",
              (0.0, 0.1)),
    ParamSpec("speed_of_sound", 343.0, "speed of sound, m/s, sent with each echo", (300.0, 360.0)),
    ParamSpec("mic_speaker_distance_m", 0.1, "speaker-to-microphone distance, m: the direct path arrives this far "
              "after emission", (0.0, 2.0)),
    ParamSpec("direct_path_tolerance_ms", 1.0, "largest accepted gap between where the locked loop delay puts the "
              "direct path and where it is found, ms; beyond it the window is moved to its own direct path (counted "
              "as a correction in /diagnostics; lasting gaps relock the loop delay)", (0.05, 50.0)),
    ParamSpec("correct_with_direct_path", True, "place emissions with the loop delay measured from the direct "
              "speaker-to-microphone path (robust to host APIs that misreport DAC/ADC times, measured off by up to 1.8 s "
              "at start and 11 ms after on PulseAudio); false: trust the stream's DAC/ADC times"),
    ParamSpec("blocksize", 0, "frames per stream callback; 0 lets PortAudio choose (a fixed blocksize drifted the loop "
              "delay on PulseAudio)", (0, 16_384)),
    ParamSpec("latency", "high", "PortAudio latency of the input stream: 'low', 'high' (PortAudio's suggestions for the "
              "device) or seconds (latency:=0.05). The input's callbacks time the samples: with 'high' (35 ms through "
              "PulseAudio) they kept the stamps within 0.35 ms of an independent observer at CPU load 10 on 2 cores "
              "(benchmarks/echo_stamps.py); 'low' underran several times a second", None, (), True),
    ParamSpec("output_latency", 0.1, "PortAudio latency of the output stream: 'low', 'high' or seconds. It only delays "
              "the chirps (the loop delay is measured), so it is chosen for no underruns: 'high' (35 ms) underflowed "
              "about twice a second at CPU load 14 on 2 cores", None, (), True),
    ParamSpec("realtime_priority", 5, "SCHED_FIFO priority of the audio callback thread and of the audio stack's "
              "helper threads in the node (libpulse's threaded-ml) (1-99; 0 = normal scheduling); needs root or an "
              "rtprio limit, otherwise they run normally and /diagnostics says so",
              (0, 99)),
    ParamSpec("calibration_file", "", "YAML written by `avs-depth-ros audio-check`; its echo_node settings (gain, "
              "latency, device, ...) replace these parameters, and its figures are logged; '' = none"),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics, s", (0.1, 60.0)),
    ParamSpec("frame_id", "mic_array", "frame_id of the echoes (the microphone array)"),
    ParamSpec("sim_preset", "bv2", "backend sim: synthetic world preset"),
    ParamSpec("sim_seed", 0, "backend sim: world seed", (0, 2**31 - 1)),
    ParamSpec("sim_sequence", 0, "backend sim: sequence (trajectory) index", (0, 1_000_000)),
]

SIM_SENSORS_NODE: list[ParamSpec] = [
    ParamSpec("preset", "bv2", "synthetic world preset"),
    ParamSpec("seed", 0, "world seed", (0, 2**31 - 1)),
    ParamSpec("sequence", 0, "sequence (trajectory) index", (0, 1_000_000)),
    ParamSpec("height", 256, "camera image height, px", (16, 4096)),
    ParamSpec("width", 512, "camera image width, px", (16, 4096)),
    ParamSpec("camera_rate", 10.0, "camera frames per second", (0.5, 120.0)),
    ParamSpec("chirp_rate", 10.0, "echoes per second", (0.5, 50.0)),
    ParamSpec("loop_frames", 100, "frames of the trajectory rendered once and then looped (caps start-up and memory)",
              (1, 100_000)),
    ParamSpec("encoding", "rgb8", "camera image encoding", None, ("rgb8", "bgr8")),
    ParamSpec("publish_depth", True, "publish the ground-truth depth on camera/depth/image (32FC1, m)"),
    ParamSpec("publish_echo", True, "publish simulated echoes on audio/echo; false when echo_node records them from "
              "real audio (make demo-audio: the room loop plays this world's response)"),
    ParamSpec("publish_pose", True, "publish the ground-truth camera pose on camera/pose (geometry_msgs/PoseStamped, "
              "frame world_frame_id), which avs_depth_ros.room_loop follows"),
    ParamSpec("world_frame_id", "world", "frame_id of camera/pose"),
    ParamSpec("camera_frame_id", "camera_color_optical_frame", "frame_id of images and camera_info"),
    ParamSpec("mic_frame_id", "mic_array", "frame_id of the echoes"),
]

_PIPELINE = PipelineSettings()

DEPTH_NODE: list[ParamSpec] = [
    ParamSpec("avsnet_checkpoint", _PIPELINE.avsnet_checkpoint, "AVS-Net checkpoint (safetensors + JSON); '' = the "
              "bundled default"),
    ParamSpec("relative_model", _PIPELINE.relative_model, "depth network whose output is scaled to metres: avsnet_rgb "
              "(AVS-Net Only-RGB checkpoint), monodepth2, or torchscript (a TorchScript file returning (B, 1, H, W) depth)",
              None, RELATIVE_KINDS),
    ParamSpec("relative_checkpoint", _PIPELINE.relative_checkpoint, "checkpoint of the relative model; '' = the bundled "
              "default for relative_model"),
    ParamSpec("device", _PIPELINE.device, "torch device: auto (CUDA if available), cpu, cuda or cuda:N; CUDA requested "
              "but absent falls back to CPU with a warning"),
    ParamSpec("half", _PIPELINE.half, "fp16 autocast on CUDA (ignored on CPU, with a warning); with backend "
              "onnxruntime, fp16 TensorRT engines"),
    ParamSpec("backend", _PIPELINE.backend, "inference runtime: torch (the checkpoints' modules) or onnxruntime (their "
              "ONNX export: avs-depth export, or made once into ~/.cache/avs_depth when a checkpoint is a .safetensors "
              "file; faster than torch on CPUs: benchmarks/avsnet_speed.py --paper-size). Pre- and post-processing are "
              "the same code for both", None, BACKENDS),
    ParamSpec("onnx_providers", _PIPELINE.onnx_providers, "backend onnxruntime: execution providers, auto (TensorRT then "
              "CUDA for a cuda device when this onnxruntime build has them, else CPU) or a comma list of tensorrt, cuda, "
              "cpu"),
    ParamSpec("warmup_iterations", 2, "forward passes on a blank frame at start, so the first frame is not slow", (0, 50)),
    ParamSpec("torch_threads", 1, "torch (and ONNX Runtime) intra-op threads; 0 = torch's default (all cores). One "
              "leaves the other cores to the sensor drivers and the robot's other processes (measured in "
              "benchmarks/node_latency.py --torch-threads); raise it on a many-core CPU without a GPU", (0, 256)),
    ParamSpec("scale_method", _PIPELINE.scale_method, "scale recovery: median ratio (AVS-Net eq. 3), mean-std, none "
              "(the relative model is already metric), or pixelwise (rescale maps of a trained head; backend torch)", None,
              ("median", "mean-std", "none", "pixelwise")),
    ParamSpec("rescale_checkpoint", _PIPELINE.rescale_checkpoint, "scale_method pixelwise: rescale-head checkpoint "
              "(avs-depth train --model rescale); '' = the bundled one"),
    ParamSpec("scale_smoothing_alpha", _PIPELINE.scale_smoothing_alpha, "weight of a new scale in log-space smoothing; "
              "1 = none (the paper scales each frame on its own)", (0.01, 1.0)),
    ParamSpec("max_scale_hold_s", _PIPELINE.max_scale_hold_s, "without a fresh echo, keep using the last scale this long "
              "(s), then publish NaN depth until an echo arrives", (0.0, 60.0)),
    ParamSpec("echo_tolerance_s", 0.35, "largest |image stamp - echo emission stamp| for pairing, s; must cover the "
              "chirp period plus the echo window, because an echo is published only after its window", (0.0, 5.0)),
    ParamSpec("echo_queue_size", 16, "echoes kept for pairing", (1, 1000)),
    ParamSpec("max_image_age_s", 1.0, "images older than this (now - stamp) are dropped as stale, s", (0.01, 3600.0)),
    ParamSpec("max_future_s", 0.5, "stamps further than this in the future are rejected, s", (0.0, 3600.0)),
    ParamSpec("out_of_range", _PIPELINE.out_of_range, "metric depth outside [min_depth, max_depth] of the model: clip "
              "to the range, or NaN (REP 117: no estimate)", None, OUT_OF_RANGE),
    ParamSpec("flip_tta", _PIPELINE.flip_tta, "AVS-Net also runs on the mirrored scene (image flipped, ears swapped) and "
              "the pseudo-metric depth is the geometric mean of both: a steadier scale for a second forward pass"),
    ParamSpec("publish_pseudo_metric", False, "also publish AVS-Net's pseudo-metric depth on avs/pseudo_metric_depth"),
    ParamSpec("publish_relative", False, "also publish the relative depth on avs/relative_depth"),
    ParamSpec("diagnostics_period_s", 1.0, "period of /diagnostics, s", (0.1, 60.0)),
    ParamSpec("min_rate_hz", 5.0, "output rate below which /diagnostics warns, Hz", (0.0, 1000.0)),
]

ROOM_LOOP: list[ParamSpec] = [
    ParamSpec("sim_node", "sim_sensors_node", "node whose world (preset, seed, sequence, width, height, camera_rate) "
              "and camera/pose the room follows"),
    ParamSpec("world_timeout_s", 60.0, "how long to wait for that node's parameters at start, s", (1.0, 600.0)),
    ParamSpec("reference_gain", 0.5, "echo_node gain at which the recording comes out at the simulator's level (its "
              "default gain)", (0.001, 1.0)),
    ParamSpec("noise", True, "add the simulator's background and microphone noise"),
    ParamSpec("tail", True, "include the simulator's late reverberation (a random tail drawn per pose)"),
    ParamSpec("block", 512, "samples per convolution block (one FFT each); adds this much delay", (64, 8192)),
    ParamSpec("latency_ms", 100.0, "buffer requested from PulseAudio for what the room plays, ms: smaller adds less "
              "delay but underruns under CPU load (every underrun delays the later echoes; echo_node relocks)",
              (5.0, 400.0)),
    ParamSpec("pulse_source", "avs_speaker.monitor", "PulseAudio source the room listens to (what echo_node plays)"),
    ParamSpec("pulse_sink", "avs_mics", "PulseAudio sink the room plays into (what echo_node records)"),
]

NODE_PARAMS: dict[str, list[ParamSpec]] = {
    "echo_node": ECHO_NODE, "sim_sensors_node": SIM_SENSORS_NODE, "depth_node": DEPTH_NODE, "room_loop": ROOM_LOOP,
}


def validate(node_name: str, specs: list[ParamSpec], values: dict[str, Any]) -> dict[str, Any]:
    """Check choices and ranges (rclpy checks ranges too; this gives the same clear error without ROS)."""
    for spec in specs:
        value = values[spec.name]
        if spec.choices and value not in spec.choices:
            raise ValueError(f"{node_name}: parameter {spec.name!r} is {value!r}; expected {spec.constraints()}")
        if spec.range is not None and isinstance(value, int | float) and not spec.range[0] <= value <= spec.range[1]:
            raise ValueError(f"{node_name}: parameter {spec.name!r} is {value!r}; expected {spec.constraints()}")
    return values


def declare_parameters(node: Any, specs: list[ParamSpec]) -> dict[str, Any]:
    """Declare each parameter with a ParameterDescriptor (description, constraints, range, read-only) and return the
    values in effect. A value of the wrong type or out of range is a ValueError naming the node and the key."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    values: dict[str, Any] = {}
    for spec in specs:
        descriptor = ParameterDescriptor(description=spec.description, additional_constraints=spec.constraints(),
                                         read_only=True, dynamic_typing=spec.dynamic)
        if spec.range is not None and isinstance(spec.default, float):
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                                  to_value=float(spec.range[1]), step=0.0)]
        elif spec.range is not None and isinstance(spec.default, int) and not isinstance(spec.default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default, descriptor).value
        except InvalidParameterTypeException as err:
            kind = type(spec.default).__name__
            hint = " (write 10.0, not 10)" if isinstance(spec.default, float) else ""
            raise ValueError(f"{node.get_name()}: parameter {spec.name!r} must be a {kind}{hint}: {err}") from err
        except InvalidParameterValueException as err:
            raise ValueError(f"{node.get_name()}: parameter {spec.name!r}: expected {spec.constraints()} ({err})") from err
    return validate(node.get_name(), specs, values)
