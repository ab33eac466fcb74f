import numpy as np
import pytest

from avs_depth_core.audio import BATVISION_CHIRP
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, bag_sequences, make_msg, open_bag, read_topic
from avs_depth_core.data.messages import (
    camera_info_fields,
    camera_info_to_K,
    echo_fields,
    echo_to_array,
    image_fields,
    image_to_depth,
    image_to_rgb,
)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_round_trip(tmp_path, storage):
    rgb = np.random.default_rng(1).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    depth = np.full((6, 8), 2.5, np.float32)
    depth[0, 0] = np.nan
    echo = np.random.default_rng(2).uniform(-1, 1, (2, 50)).astype(np.float32)
    K = np.array([[5.0, 0, 4], [0, 5, 3], [0, 0, 1]])
    with BagWriter(tmp_path / "bag", storage=storage) as w:
        w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, 10, "cam", image_fields(rgb[..., ::-1], "bgr8")),
                topics.IMAGE_TYPE)
        w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, 10, "cam", image_fields(depth, "32FC1")), topics.IMAGE_TYPE)
        w.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, 10, "cam", camera_info_fields(K, 8, 6)),
                topics.CAMERA_INFO_TYPE)
        w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, 9, "mic", echo_fields(echo, 44100, BATVISION_CHIRP)),
                topics.ECHO_TYPE)
        w.add_sequence("s0", "train", 0, 20)
    with open_bag(tmp_path / "bag") as r:
        (img,) = list(read_topic(r, "camera/color/image_raw"))
        np.testing.assert_array_equal(image_to_rgb(img.msg), rgb)
        (d,) = list(read_topic(r, topics.DEPTH))
        out = image_to_depth(d.msg)
        assert np.isnan(out[0, 0]) and np.allclose(out[1:], 2.5)
        (e,) = list(read_topic(r, topics.ECHO))
        assert e.stamp_ns == 9 and e.msg.sample_rate == 44100
        np.testing.assert_array_equal(echo_to_array(e.msg), echo)
        (ci,) = list(read_topic(r, topics.CAMERA_INFO))
        np.testing.assert_allclose(camera_info_to_K(ci.msg), K)
        assert bag_sequences(tmp_path / "bag") == [{"name": "s0", "split": "train", "start_ns": 0, "end_ns": 20}]
        with pytest.raises(ValueError, match="/nope not found"):
            list(read_topic(r, "/nope", tmp_path / "bag"))


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"), open_bag(tmp_path / "missing"):
        pass
    (tmp_path / "junk").mkdir()
    with pytest.raises(ValueError, match="junk"), open_bag(tmp_path / "junk"):
        pass
    msg = make_msg(topics.IMAGE_TYPE, 0, "c", image_fields(np.zeros((2, 2, 1), np.uint16), "16UC1"))
    with pytest.raises(ValueError, match="16UC1"):
        image_to_rgb(msg, "cam")
    msg = make_msg(topics.IMAGE_TYPE, 0, "c", image_fields(np.zeros((2, 2, 3), np.uint8), "rgb8"))
    msg.step = 2
    with pytest.raises(ValueError, match="step"):
        image_to_rgb(msg)
    info = make_msg(topics.CAMERA_INFO_TYPE, 0, "c", camera_info_fields(np.zeros((3, 3)), 2, 2))
    with pytest.raises(ValueError, match="uncalibrated"):
        camera_info_to_K(info)
