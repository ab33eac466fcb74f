import csv
import re

import numpy as np
import pytest
from PIL import Image
from scipy.io import wavfile

from avs_depth_core.cli import main
from avs_depth_core.data import topics
from avs_depth_core.data.bag import bag_sequences, open_bag, read_topic
from avs_depth_core.data.batvision import STAMP_ORIGIN_NS
from avs_depth_core.data.messages import camera_info_to_K, echo_to_array, image_to_rgb

BV2_HEADER = ["", "depth path", "depth file name", "audio path", "audio file name", "camera path", "camera file name"]
PERIOD_NS = 100_000_000
GAP_NS = 10 * 10**9


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def bv2_row(i, location, index):
    """A BV2 CSV row as the official files have it: paths relative to the BV2 root, pandas index first."""
    return [i, f"{location}/depth", f"depth_{index}.npy", f"{location}/audio", f"audio_{index}.wav",
            f"{location}/camera", f"camera_{index}.jpeg"]


def link_sample(root, location, sample, index=47):
    for sub, name in (("camera", "camera_47.jpeg"), ("depth", "depth_47.npy"), ("audio", "audio_47.wav")):
        (root / location / sub).mkdir(parents=True, exist_ok=True)
        (root / location / sub / name.replace("47", str(index))).symlink_to(sample / name)


def read_bag(path):
    with open_bag(path) as r:
        return {t: list(read_topic(r, t)) for t in (topics.IMAGE, topics.DEPTH, topics.ECHO, topics.CAMERA_INFO)}


def raw_depth(msg):
    assert msg.encoding == "32FC1"
    return np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)


def convert(capsys, *args):
    code = main(["convert-batvision", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_bv2_real_sample(tmp_path, bv2_sample, capsys):
    root = tmp_path / "bv2"
    link_sample(root, "Hallway", bv2_sample)
    write_csv(root / "Hallway" / "train.csv", BV2_HEADER, [bv2_row(0, "Hallway", 47), bv2_row(1, "Hallway", 47)])
    write_csv(root / "Hallway" / "val.csv", BV2_HEADER, [bv2_row(0, "Hallway", 47)])
    write_csv(root / "Hallway" / "test.csv", BV2_HEADER, [bv2_row(0, "Hallway", 47)])
    code, out, _ = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag")
    assert code == 0
    assert "train            2           2         0" in out and "total            4           4         0" in out

    mm = np.load(bv2_sample / "depth_47.npy")
    assert mm.dtype == np.uint16 and (mm == 0).any()
    expected_depth = (mm.astype(np.float64) / 1000).astype(np.float32)
    expected_depth[mm == 0] = np.nan
    rate, pcm = wavfile.read(bv2_sample / "audio_47.wav")
    assert pcm.dtype == np.int32
    expected_audio = (pcm.T.astype(np.float64) / 2**31).astype(np.float32)
    expected_rgb = np.asarray(Image.open(bv2_sample / "camera_47.jpeg").convert("RGB"))

    msgs = read_bag(tmp_path / "bag")
    assert all(len(v) == 4 for v in msgs.values())
    for image, depth, echo, info in zip(*msgs.values(), strict=True):
        assert image.stamp_ns == depth.stamp_ns == echo.stamp_ns == info.stamp_ns
        np.testing.assert_array_equal(image_to_rgb(image.msg), expected_rgb)
        np.testing.assert_array_equal(raw_depth(depth.msg), expected_depth)
        assert echo.msg.sample_rate == rate == 44_100 and echo.msg.channels == 2 and echo.msg.emission_offset == 0
        assert echo.msg.channel_order == "left,right"
        np.testing.assert_array_equal(echo_to_array(echo.msg), expected_audio)
        K = camera_info_to_K(info.msg)
        assert (info.msg.width, info.msg.height) == (1280, 720)
        np.testing.assert_allclose(K, [[640, 0, 640], [0, 640, 360], [0, 0, 1]])  # assumed 90 deg HFOV

    stamps = [m.stamp_ns for m in msgs[topics.IMAGE]]
    train_end = STAMP_ORIGIN_NS + PERIOD_NS
    assert stamps == [STAMP_ORIGIN_NS, train_end, train_end + GAP_NS, train_end + 2 * GAP_NS]
    seqs = bag_sequences(tmp_path / "bag")
    assert [(s["name"], s["split"], s["frames"]) for s in seqs] == [
        ("Hallway/train", "train", 2), ("Hallway/val", "val", 1), ("Hallway/test", "test", 1)]
    assert seqs[0]["start_ns"] == STAMP_ORIGIN_NS and seqs[0]["end_ns"] == train_end


def bv2_synthetic(root, location, index, *, rate=44_100, audio=None, depth=None, size=(6, 8)):
    """A small BV2-format instance: PNG camera image (exact), uint16 mm depth, int16 stereo wav."""
    h, w = size
    rng = np.random.default_rng(index)
    for sub in ("camera", "depth", "audio"):
        (root / location / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / location / "camera" / f"camera_{index}.jpeg",
                                                                          format="PNG")
    mm = rng.integers(500, 9000, (h, w), dtype=np.uint16) if depth is None else depth
    np.save(root / location / "depth" / f"depth_{index}.npy", mm)
    pcm = (rng.uniform(-0.3, 0.3, (3000, 2)) * 32767).astype(np.int16) if audio is None else audio
    wavfile.write(root / location / "audio" / f"audio_{index}.wav", rate, pcm)


def test_bv2_missing_file_fails_or_is_skipped(tmp_path, capsys):
    root = tmp_path / "bv2"
    for i in range(3):
        bv2_synthetic(root, "Lab", i)
    write_csv(root / "Lab" / "train.csv", BV2_HEADER, [bv2_row(0, "Lab", 0), bv2_row(1, "Lab", 1)])
    write_csv(root / "Lab" / "val.csv", BV2_HEADER, [bv2_row(0, "Lab", 2), bv2_row(1, "Lab", 9), bv2_row(2, "Lab", 2)])
    code, _, err = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag")
    assert code == 2 and not (tmp_path / "bag").exists()
    assert f"{root / 'Lab' / 'val.csv'} line 3: depth file {root / 'Lab/depth/depth_9.npy'} not found" in err
    assert "audio_9.wav not found" in err and "camera_9.jpeg not found" in err and "--skip-bad" in err

    code, out, err = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag", "--skip-bad")
    assert code == 0
    assert f"skipped {root / 'Lab' / 'val.csv'} line 3: depth file" in err
    assert "val              3           2         1" in out and "total            5           4         1" in out
    msgs = read_bag(tmp_path / "bag")
    assert len(msgs[topics.IMAGE]) == 4
    # The skipped row keeps its time slot, so stamps stay tied to row numbers.
    val_start = STAMP_ORIGIN_NS + PERIOD_NS + GAP_NS
    assert [m.stamp_ns for m in msgs[topics.ECHO]][2:] == [val_start, val_start + 2 * PERIOD_NS]
    seqs = bag_sequences(tmp_path / "bag")
    assert seqs[1]["rows"] == 3 and seqs[1]["frames"] == 2


def test_bv2_paths_relative_to_location_and_intrinsics_option(tmp_path, capsys):
    root = tmp_path / "bv2"
    bv2_synthetic(root, "Lab", 0)
    write_csv(root / "Lab" / "train.csv", BV2_HEADER[1:], [["depth", "depth_0.npy", "audio", "audio_0.wav", "camera",
                                                            "camera_0.jpeg"]])
    code, _, err = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag", "--intrinsics", "5,6,3.5,2.5")
    assert code == 0, err
    (info,) = read_bag(tmp_path / "bag")[topics.CAMERA_INFO]
    np.testing.assert_allclose(camera_info_to_K(info.msg), [[5, 0, 3.5], [0, 6, 2.5], [0, 0, 1]])
    code, _, err = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag2", "--intrinsics", "5,6")
    assert code == 2 and "--intrinsics '5,6': expected fx,fy,cx,cy" in err


@pytest.mark.parametrize(("kind", "message"), [
    ("rate", "sample rate 48000 Hz, expected 44100 Hz"),
    ("silent", "channel 0 is silent"),
    ("clipped", "channel 1 is clipped"),
    ("mono", "1 channels, expected 2"),
    ("depth_zero", "no valid depth pixel"),
    ("depth_shape", "depth file .*depth_1.npy is 4x3, image .*camera_1.jpeg is 8x6"),
    ("depth_corrupt", "depth file .*depth_1.npy is not a readable .npy array"),
    ("image_corrupt", "camera_1.jpeg is not a readable image"),
])
def test_bv2_bad_content(tmp_path, capsys, kind, message):
    root = tmp_path / "bv2"
    bv2_synthetic(root, "Lab", 0)
    pcm = (np.random.default_rng(0).uniform(-0.3, 0.3, (3000, 2)) * 32767).astype(np.int16)
    if kind == "silent":
        pcm[:, 0] = 0
    if kind == "clipped":
        pcm[:100, 1] = 32767
    if kind == "mono":
        pcm = pcm[:, :1]
    depth = {"depth_zero": np.zeros((6, 8), np.uint16), "depth_shape": np.ones((3, 4), np.uint16)}.get(kind)
    bv2_synthetic(root, "Lab", 1, rate=48_000 if kind == "rate" else 44_100, audio=pcm, depth=depth)
    if kind == "depth_corrupt":
        (root / "Lab/depth/depth_1.npy").write_text("not numpy")
    if kind == "image_corrupt":
        (root / "Lab/camera/camera_1.jpeg").write_bytes(b"\xff\xd8 truncated")
    write_csv(root / "Lab" / "train.csv", BV2_HEADER, [bv2_row(0, "Lab", 0), bv2_row(1, "Lab", 1)])
    code, _, err = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag")
    assert code == 2 and not (tmp_path / "bag").exists()
    assert "train.csv line 3: " in err
    assert re.search(message, err), err
    code, out, err = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag", "--skip-bad")
    assert code == 0 and "train            2           1         1" in out
    assert "skipped" in err and re.search(message, err)


def test_bv2_layout_errors(tmp_path, capsys):
    code, _, err = convert(capsys, "--root", tmp_path / "nowhere", "--version", 2, "--out", tmp_path / "bag")
    assert code == 2 and "nowhere: BatVision root folder not found" in err
    (tmp_path / "empty").mkdir()
    code, _, err = convert(capsys, "--root", tmp_path / "empty", "--version", 2, "--out", tmp_path / "bag")
    assert code == 2 and "no BatVision V2 location folders" in err
    root = tmp_path / "bv2"
    write_csv(root / "Lab" / "train.csv", ["depth path", "audio path"], [["a", "b"]])
    code, _, err = convert(capsys, "--root", root, "--version", 2, "--out", tmp_path / "bag")
    assert code == 2 and "train.csv: missing columns ['depth file name', 'audio file name'" in err


def bv1_instance(root, date, name, rng, *, image=True, audio_dtype=np.float32):
    depth = rng.uniform(300, 11000, (6, 8))
    depth[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    (root / date / "depth").mkdir(parents=True, exist_ok=True)
    (root / date / "audio" / "raw_long").mkdir(parents=True, exist_ok=True)
    (root / date / "images").mkdir(parents=True, exist_ok=True)
    np.save(root / date / "depth" / f"{name}.npy", depth)
    ears = rng.uniform(-0.4, 0.4, (2, 3200))
    if audio_dtype == np.int16:
        ears = (ears * 32767).astype(np.int16)
    else:
        ears = ears.astype(audio_dtype)
    np.save(root / date / "audio" / "raw_long" / f"{name}_left.npy", ears[0])
    np.save(root / date / "audio" / "raw_long" / f"{name}_right.npy", ears[1])
    rgb = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    if image:
        Image.fromarray(rgb).save(root / date / "images" / f"{name}.png")
    row = [f"{date}/depth/{name}.npy", f"{date}/audio/raw_long/{name}_left.npy", f"{date}/audio/raw_long/{name}_right.npy",
           f"{date}/images/{name}.png"]
    return row, depth, ears, rgb


def test_bv1_layout(tmp_path, capsys):
    root = tmp_path / "bv1"
    rng = np.random.default_rng(3)
    header = ["depth path", "audio path left", "audio path right", "image path"]
    a = bv1_instance(root, "2019.08.26", "180336.309017", rng)
    b = bv1_instance(root, "2019.08.27", "100000.000001", rng, audio_dtype=np.int16)
    c = bv1_instance(root, "2019.08.26", "180337.111111", rng)
    d = bv1_instance(root, "2019.08.27", "100001.000001", rng)
    write_csv(root / "train.csv", header, [a[0], b[0], c[0]])
    write_csv(root / "test.csv", header, [d[0]])
    code, out, err = convert(capsys, "--root", root, "--version", 1, "--out", tmp_path / "bag")
    assert code == 0, err
    assert "train            3           3         0" in out and "note:" in err and "val.csv not found" in err
    seqs = bag_sequences(tmp_path / "bag")
    assert [(s["name"], s["frames"]) for s in seqs] == [("2019.08.26/train", 2), ("2019.08.27/train", 1),
                                                        ("2019.08.27/test", 1)]
    msgs = read_bag(tmp_path / "bag")
    # Bag order is by stamp: sequence 2019.08.26/train (rows a, c), then 2019.08.27/train (b), then test (d).
    for inst, image, depth, echo in zip([a, c, b, d], msgs[topics.IMAGE], msgs[topics.DEPTH], msgs[topics.ECHO], strict=True):
        _, mm, ears, rgb = inst
        expected = (mm / 1000).astype(np.float32)
        expected[~np.isfinite(mm) | (mm <= 0)] = np.nan
        np.testing.assert_array_equal(raw_depth(depth.msg), expected)
        scale = 2.0**15 if ears.dtype == np.int16 else 1.0
        np.testing.assert_array_equal(echo_to_array(echo.msg), (ears.astype(np.float64) / scale).astype(np.float32))
        np.testing.assert_array_equal(image_to_rgb(image.msg), rgb)
    assert msgs[topics.IMAGE][1].stamp_ns - msgs[topics.IMAGE][0].stamp_ns == PERIOD_NS


def test_bv1_image_column_and_audio_scale(tmp_path, capsys):
    root = tmp_path / "bv1"
    rng = np.random.default_rng(4)
    row, *_ = bv1_instance(root, "2019.08.26", "1", rng)
    write_csv(root / "train.csv", ["depth path", "audio path left", "audio path right", "image path", "camera path"],
              [[*row, row[3]]])
    code, _, err = convert(capsys, "--root", root, "--version", 1, "--out", tmp_path / "bag")
    assert code == 2 and "cannot tell which column names the RGB image" in err and "--bv1-image-column" in err
    code, _, err = convert(capsys, "--root", root, "--version", 1, "--out", tmp_path / "bag", "--bv1-image-column",
                           "camera path")
    assert code == 0, err

    loud = tmp_path / "loud"
    row, *_ = bv1_instance(loud, "2019.08.26", "1", rng)
    np.save(loud / row[1], np.full(3200, 5000.0, np.float32))
    write_csv(loud / "train.csv", ["depth path", "audio path left", "audio path right", "rgb"], [row])
    code, _, err = convert(capsys, "--root", loud, "--version", 1, "--out", tmp_path / "bag2")
    assert code == 2 and "1_left.npy: float samples reach 5e+03, outside [-1, 1]; pass --bv1-audio-scale" in err
