import json

import numpy as np

from avs_depth_core.audio import BATVISION_CHIRP
from avs_depth_core.cli import main
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg
from avs_depth_core.data.bag_info import summarise_bag
from avs_depth_core.data.messages import camera_info_fields, echo_fields, image_fields

T0 = 5_000_000_000
K = np.array([[10.0, 0, 4], [0, 10, 3], [0, 0, 1]])


def write_bag(path, with_sequences=True):
    """30 Hz camera with depth, 10 Hz echoes emitted 10 ms after every third frame, the last echo silent."""
    rng = np.random.default_rng(0)
    with BagWriter(path) as w:
        for i in range(12):
            t = T0 + i * 33_333_333
            w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "c", image_fields(np.zeros((6, 8, 3), np.uint8), "rgb8")),
                    topics.IMAGE_TYPE)
            w.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, t, "c", camera_info_fields(K, 8, 6)),
                    topics.CAMERA_INFO_TYPE)
            if i < 9:
                w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "c", image_fields(np.ones((6, 8), np.float32), "32FC1")),
                        topics.IMAGE_TYPE)
            if i % 3 == 0:
                samples = rng.uniform(-0.5, 0.5, (2, 400)).astype(np.float32) * (i < 9)
                fields = echo_fields(samples, 44_100, BATVISION_CHIRP)
                w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t + 10_000_000, "m", fields), topics.ECHO_TYPE)
        if with_sequences:
            w.add_sequence("first", "train", T0, T0 + 5 * 33_333_333)
            w.add_sequence("second", "test", T0 + 6 * 33_333_333, T0 + 11 * 33_333_333)
    return path


def test_summary(tmp_path):
    s = summarise_bag(write_bag(tmp_path / "bag"))
    image = s["topics"][topics.IMAGE]
    assert image["count"] == 12 and image["first_image"] == {"width": 8, "height": 6, "encoding": "rgb8"}
    assert abs(image["rate_hz"] - 30.0) < 0.01 and image["stamp_first_ns"] == T0
    echo = s["topics"][topics.ECHO]
    assert echo["count"] == 4 and abs(echo["rate_hz"] - 10.0) < 0.01
    assert echo["sample_rates"] == [44_100] and echo["channels"] == [2] and echo["samples_min"] == 400
    assert echo["bad_echoes"] == 1 and "silent" in echo["bad_examples"][0]
    assert s["topics"][topics.CAMERA_INFO]["first_camera_info"]["K"] == K.reshape(-1).tolist()
    assert s["splits"] == {"train": 6, "test": 6} and not s["sequences_derived"]
    assert [(q["name"], q["frames"]) for q in s["sequences"]] == [("first", 6), ("second", 6)]
    # Frame 3m is 10 ms before an echo, 3m+1 23.3 ms after it, 3m+2 43.3 ms before the next one; the last frame (11)
    # has no next echo and is 56.7 ms after the last one.
    assert s["pairing"] == {"tolerance_s": 0.05, "frames": 12, "with_echo": 11, "with_depth": 9,
                            "with_echo_and_depth": 9, "echoes_unused": 0}
    tight = summarise_bag(tmp_path / "bag", tolerance_s=0.02)["pairing"]
    assert tight["with_echo"] == 4 and tight["echoes_unused"] == 0


def test_cli_output(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", with_sequences=False)
    assert main(["bag-info", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "/camera/color/image_raw  sensor_msgs/msg/Image  12 msgs  30.000 Hz" in out
    assert "image 8x6 rgb8" in out and "echo [44100] Hz, [2] channels, 400..400 samples per channel, 1 bad" in out
    assert "derived from stamp gaps" in out
    assert "pairing (tolerance 50 ms): 11/12 frames with an echo, 9 with depth, 9 with both; 0 echoes unused" in out
    assert main(["bag-info", str(bag), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pairing"]["frames"] == 12
    assert main(["bag-info", str(tmp_path / "missing")]) == 2
    assert "missing: bag not found" in capsys.readouterr().err
