import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from avs_depth_core.audio import BATVISION_CHIRP, StftSettings, echo_features
from avs_depth_core.data import cache as cache_module
from avs_depth_core.data import topics
from avs_depth_core.data.bag import BagWriter, make_msg, raw_header_stamp_ns, typestore
from avs_depth_core.data.datasets import SupervisedBagDataset, TripletBagDataset
from avs_depth_core.data.messages import camera_info_fields, echo_fields, image_fields
from avs_depth_core.data.splits import FrameSequence, assign_frames, derive_sequences
from avs_depth_core.geometry import scale_intrinsics

H0, W0 = 12, 16  # recorded image size
SIZE = (6, 8)  # dataset image size
ECHO_SIZE = (8, 10)
K0 = np.array([[20.0, 0, 8], [0, 20, 6], [0, 0, 1]])
T0 = 1_000_000_000_000
PERIOD = 100_000_000  # 10 Hz


def frame_rgb(i: int) -> np.ndarray:
    """An image whose pixels encode its frame number (for checking triple order)."""
    rgb = np.full((H0, W0, 3), i % 256, np.uint8)
    rgb[..., 1] = np.arange(W0, dtype=np.uint8)[None] * 10
    return rgb


def frame_depth(i: int) -> np.ndarray:
    depth = np.full((H0, W0), 1.0 + 0.1 * i, np.float32)
    depth[1, 1] = np.nan
    depth[1, 3] = 50.0  # beyond max_depth
    return depth


def frame_echo(i: int, n: int = 3000) -> np.ndarray:
    return np.random.default_rng(i).uniform(-0.5, 0.5, (2, n)).astype(np.float32)


def write_bag(path, n=12, stamps=None, echo_every=1, echo_offset_ns=0, sequences=None, camera_info=True, depth=True,
              echo=True, image_encoding="rgb8", echo_rate=44_100, bad_echo=None, storage="mcap"):
    stamps = [T0 + i * PERIOD for i in range(n)] if stamps is None else stamps
    with BagWriter(path, storage=storage) as w:
        for i, t in enumerate(stamps):
            if camera_info:
                w.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, t, "cam", camera_info_fields(K0, W0, H0)),
                        topics.CAMERA_INFO_TYPE)
            img = frame_rgb(i) if image_encoding == "rgb8" else np.zeros((H0, W0), np.uint16)
            w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(img, image_encoding)), topics.IMAGE_TYPE)
            if depth:
                w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(frame_depth(i), "32FC1")),
                        topics.IMAGE_TYPE)
            if echo and i % echo_every == 0:
                samples = frame_echo(i)
                kind = (bad_echo or {}).get(i)
                if kind == "silent":
                    samples[:] = 0.0
                elif kind == "clipped":
                    samples[1, :100] = 1.0
                elif kind == "nan":
                    samples[0, 7] = np.nan
                w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t + echo_offset_ns, "mic",
                                              echo_fields(samples, echo_rate, BATVISION_CHIRP)), topics.ECHO_TYPE)
        for seq in sequences or []:
            w.add_sequence(*seq)
    return path


def supervised(bag, tmp_path, split="all", **kw):
    kw = {"image_size": SIZE, "echo_size": ECHO_SIZE, "cache_dir": tmp_path / "cache", "progress": False, "verbose": False,
          **kw}
    return SupervisedBagDataset(bag, split, **kw)


def test_raw_header_stamp_matches_deserialised():
    msg = make_msg(topics.IMAGE_TYPE, 1_234_567_890_123, "cam", image_fields(frame_rgb(0), "rgb8"))
    raw = typestore().serialize_cdr(msg, topics.IMAGE_TYPE)
    assert raw_header_stamp_ns(raw) == 1_234_567_890_123
    with pytest.raises(ValueError, match="too few"):
        raw_header_stamp_ns(raw[:8])


def test_supervised_item_contents(tmp_path):
    bag = write_bag(tmp_path / "bag", n=4, sequences=[("s", "train", T0, T0 + 3 * PERIOD)])
    ds = supervised(bag, tmp_path, "train")
    assert len(ds) == 4 and ds.report == {}
    item = ds[2]
    assert item["stamp_ns"] == T0 + 2 * PERIOD
    assert item["rgb"].shape == (3, *SIZE) and item["rgb"].dtype == torch.float32
    expected = F.interpolate(torch.from_numpy(frame_rgb(2)).permute(2, 0, 1)[None].float(), size=SIZE, mode="bilinear",
                             align_corners=False, antialias=True)[0].round() / 255
    torch.testing.assert_close(item["rgb"], expected)
    depth = item["depth"]
    assert depth.shape == (1, *SIZE)
    # Halving with nearest at pixel centres takes source pixel floor((j + 0.5) * 2) = 2j + 1: NaN at (1, 1) and 50 m at
    # (1, 3) land on (0, 0) and (0, 1) and become 0.
    assert depth[0, 0, 0] == 0 and depth[0, 0, 1] == 0
    assert torch.allclose(depth[0, 1:], torch.tensor(1.2))
    echo = echo_features(frame_echo(2), 44_100, expected_rate=44_100, max_depth=30.0, size=ECHO_SIZE, speed_of_sound=340.0)
    torch.testing.assert_close(item["echo"], echo)
    torch.testing.assert_close(item["K"], torch.tensor(scale_intrinsics(K0, (H0, W0), SIZE), dtype=torch.float32))
    assert item["K"][0, 0] == pytest.approx(10.0) and item["K"][0, 2] == pytest.approx(3.75)


def test_echo_window_cache_equals_feature_cache(tmp_path):
    bag = write_bag(tmp_path / "bag", n=3)
    a = supervised(bag, tmp_path, cache_features=True)
    b = supervised(bag, tmp_path, cache_features=False)
    assert a.cache.path != b.cache.path
    assert b.cache.array("echo").shape[-1] == 7782  # the BV2 window: 2 * 30 m / 340 m/s * 44.1 kHz
    for i in range(3):
        torch.testing.assert_close(a[i]["echo"], b[i]["echo"], rtol=0, atol=0)


def test_unpaired_frames_are_counted(tmp_path):
    # Echoes on every other frame, 30 ms after its image: within the 50 ms tolerance.
    bag = write_bag(tmp_path / "bag", n=10, echo_every=2, echo_offset_ns=30_000_000)
    ds = supervised(bag, tmp_path)
    assert len(ds) == 5 and ds.report == {"no paired echo": 5}
    assert [ds[i]["stamp_ns"] for i in range(5)] == [T0 + 2 * i * PERIOD for i in range(5)]
    with pytest.raises(ValueError, match="split 'all' has no usable frames.*no paired echo: 10"):
        supervised(bag, tmp_path, tolerance_s=0.02)


def test_splits_and_errors(tmp_path):
    bag = write_bag(tmp_path / "bag", n=10, sequences=[("a", "train", T0, T0 + 5 * PERIOD),
                                                       ("b", "test", T0 + 6 * PERIOD, T0 + 9 * PERIOD)])
    assert len(supervised(bag, tmp_path, "train")) == 6
    assert len(supervised(bag, tmp_path, "test")) == 4
    assert len(supervised(bag, tmp_path, "all")) == 10
    with pytest.raises(ValueError, match=r"bag: unknown split 'vall'.*'train': 6, 'test': 4"):
        supervised(bag, tmp_path, "vall")
    far = T0 + 10**12  # a val sequence holding no frame
    bag2 = write_bag(tmp_path / "bag2", n=4, sequences=[("a", "train", T0, T0 + 3 * PERIOD), ("b", "val", far, far)])
    with pytest.raises(ValueError, match=r"bag2: split 'val' has no usable frames; the bag has splits \{'train': 4\}"):
        supervised(bag2, tmp_path, "val")


def test_frames_outside_sequences_are_reported(tmp_path):
    bag = write_bag(tmp_path / "bag", n=6, sequences=[("a", "train", T0, T0 + 3 * PERIOD)])
    ds = supervised(bag, tmp_path, "train")
    assert len(ds) == 4 and ds.report == {"outside every sequence": 2}
    assert "outside every sequence: 2" in ds.summary()


def test_derived_sequences():
    stamps = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59]
    seqs = derive_sequences(np.array(stamps) * 10**8)  # gap of 4.1 s between the two runs
    assert [(s.name, s.split) for s in seqs] == [("run000-train", "train"), ("run000-val", "val"), ("run000-test", "test"),
                                                  ("run001-train", "train"), ("run001-val", "val"), ("run001-test", "test")]
    assert seqs[0].end_ns == 7 * 10**8 and seqs[1].start_ns == 8 * 10**8 and seqs[3].start_ns == 50 * 10**8
    with pytest.raises(ValueError, match="sum to 1"):
        derive_sequences([0, 1], fractions={"train": 0.5})
    with pytest.raises(ValueError, match="overlap"):
        assign_frames([0], [FrameSequence("a", "train", 0, 10), FrameSequence("b", "val", 5, 20)])


def test_cache_is_reused_and_keyed_by_bag_content(tmp_path, monkeypatch):
    bag = write_bag(tmp_path / "bag", n=3)
    first = supervised(bag, tmp_path)
    calls = []
    real_build = cache_module._build
    monkeypatch.setattr(cache_module, "_build", lambda *a: (calls.append(a), real_build(*a)))
    again = supervised(bag, tmp_path)
    assert calls == [] and again.cache.path == first.cache.path
    torch.testing.assert_close(again[1]["rgb"], first[1]["rgb"])
    supervised(bag, tmp_path, max_depth=10.0)  # other settings, other cache
    assert len(calls) == 1
    shutil.rmtree(bag)
    write_bag(bag, n=3, echo_offset_ns=1000)  # the same path with other content
    rewritten = supervised(bag, tmp_path)
    assert len(calls) == 2 and rewritten.cache.path != first.cache.path
    assert not list((tmp_path / "cache").glob("*.tmp-*"))


def test_dataloader_with_workers(tmp_path):
    bag = write_bag(tmp_path / "bag", n=6)
    ds = supervised(bag, tmp_path)
    batches = {w: next(iter(DataLoader(ds, batch_size=6, num_workers=w))) for w in (0, 2)}
    assert batches[0]["rgb"].shape == (6, 3, *SIZE) and batches[0]["stamp_ns"].dtype == torch.int64
    for key in ("rgb", "echo", "depth", "K", "stamp_ns"):
        torch.testing.assert_close(batches[0][key], batches[2][key])


def test_triplets_order_and_sequences(tmp_path):
    bag = write_bag(tmp_path / "bag", n=14, echo_every=2,
                    sequences=[("a", "train", T0, T0 + 7 * PERIOD), ("b", "train", T0 + 8 * PERIOD, T0 + 13 * PERIOD)])
    ds = TripletBagDataset(bag, "train", image_size=SIZE, echo_size=ECHO_SIZE, interval=2, cache_dir=tmp_path / "c",
                           progress=False, verbose=False)
    # Sequence a (frames 0-7) gives centres 2..5, sequence b (frames 8-13) centres 10, 11: never across a and b.
    centres = [(ds[i]["stamp_ns"] - T0) // PERIOD for i in range(len(ds))]
    assert centres == [2, 3, 4, 5, 10, 11]
    for i, c in enumerate(centres):
        item = ds[i]
        frame_ids = (item["rgb"][:, 0, 0, 0] * 255).round().int().tolist()
        assert frame_ids == [c - 2, c, c + 2]
        assert item["rgb"].shape == (3, 3, *SIZE) and item["K"].shape == (3, 3)
        assert item["has_depth"] and item["depth"].shape == (1, *SIZE)
        assert item["has_echo"] == (c % 2 == 0) and item["echo"].shape == (2, *ECHO_SIZE)
        assert item["echo"].abs().sum() > 0 if item["has_echo"] else item["echo"].abs().sum() == 0
    assert ds.report["frames within 2 frames of a sequence end (no triple)"] == 8
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["rgb"].shape == (3, 3, 3, *SIZE)
    assert "echo_triple" not in batch  # only asked for by echo-supervised training
    with_neighbours = TripletBagDataset(bag, "train", image_size=SIZE, echo_size=ECHO_SIZE, interval=2,
                                        cache_dir=tmp_path / "c", progress=False, verbose=False, neighbour_echoes=True)
    for i, c in enumerate(centres):
        item = with_neighbours[i]
        assert item["echo_triple"].shape == (3, 2, *ECHO_SIZE)
        assert item["has_echo_triple"].tolist() == [(c - 2) % 2 == 0, c % 2 == 0, (c + 2) % 2 == 0]
        torch.testing.assert_close(item["echo_triple"][1], item["echo"])
        if c % 2 == 0:  # frames c - 2 and c + 2 have echoes of their own
            assert not torch.equal(item["echo_triple"][0], item["echo_triple"][1])
        else:
            assert item["echo_triple"].abs().sum() == 0


def test_triplets_derive_sequences_from_gaps(tmp_path):
    stamps = [T0 + i * PERIOD for i in range(10)] + [T0 + 5 * 10**9 + i * PERIOD for i in range(10)]
    bag = write_bag(tmp_path / "bag", stamps=stamps, depth=False, echo=False)
    ds = TripletBagDataset(bag, "train", image_size=SIZE, interval=1, cache_dir=tmp_path / "c", progress=False,
                           verbose=False)
    # Each run: 8 train frames (0.8 of 10) -> centres 1..6; frame 7 would need frame 8 from the val chunk.
    centres = [(ds[i]["stamp_ns"] - T0) for i in range(len(ds))]
    assert centres == [i * PERIOD for i in range(1, 7)] + [5 * 10**9 + i * PERIOD for i in range(1, 7)]
    assert "depth" not in ds[0] and "echo" not in ds[0]
    assert ds.cache.meta["sequences_derived"]


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        supervised(tmp_path / "missing", tmp_path)
    no_depth = write_bag(tmp_path / "no_depth", n=2, depth=False)
    with pytest.raises(ValueError, match="topic /camera/depth/image not found"):
        supervised(no_depth, tmp_path)
    no_info = write_bag(tmp_path / "no_info", n=3, camera_info=False)
    with pytest.raises(ValueError, match="topic /camera/color/camera_info not found"):
        TripletBagDataset(no_info, "all", image_size=SIZE, interval=1, cache_dir=tmp_path / "c", progress=False)
    ds = supervised(no_info, tmp_path)  # supervised samples do not need K unless asked: NaN and reported
    assert torch.isnan(ds[0]["K"]).all() and "K is NaN" in ds.summary()
    rate = write_bag(tmp_path / "rate", n=2, echo_rate=48_000)
    with pytest.raises(ValueError, match=r"rate:/audio/echo stamp \d+ ns: echo sample rate 48000 Hz, expected 44100 Hz"):
        supervised(rate, tmp_path)
    enc = write_bag(tmp_path / "enc", n=2, image_encoding="16UC1")
    with pytest.raises(ValueError, match="image_raw stamp .* encoding '16UC1' is not accepted"):
        supervised(enc, tmp_path)
    for kind, message in (("silent", "echo channel 0 is silent"), ("clipped", "echo channel 1 is clipped"),
                          ("nan", "echo holds NaN or inf samples")):
        bag = write_bag(tmp_path / kind, n=4, bad_echo={1: kind})
        with pytest.raises(ValueError, match=rf"{kind}:/audio/echo stamp {T0 + PERIOD} ns: {message}"):
            supervised(bag, tmp_path)
        skipped = supervised(bag, tmp_path, skip_bad=True)
        assert len(skipped) == 3 and skipped.report == {"bad echo (skipped)": 1}
        assert message in skipped.summary()
    corrupt = write_bag(tmp_path / "corrupt", n=4)
    mcap = next(corrupt.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        supervised(corrupt, tmp_path)


def test_uncalibrated_camera(tmp_path):
    bag = tmp_path / "bag"
    with BagWriter(bag) as w:
        for i in range(3):
            t = T0 + i * PERIOD
            w.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, t, "c", camera_info_fields(np.zeros((3, 3)), W0, H0)),
                    topics.CAMERA_INFO_TYPE)
            w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "c", image_fields(frame_rgb(i), "rgb8")), topics.IMAGE_TYPE)
            w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "c", image_fields(frame_depth(i), "32FC1")),
                    topics.IMAGE_TYPE)
            w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t, "m", echo_fields(frame_echo(i), 44_100, BATVISION_CHIRP)),
                    topics.ECHO_TYPE)
    ds = supervised(bag, tmp_path)  # supervised samples do not need K: NaN, reported
    assert len(ds) == 3 and torch.isnan(ds[0]["K"]).all()
    assert ds.report == {"unusable /camera/color/camera_info: K is NaN": 3} and "uncalibrated" in ds.summary()
    with pytest.raises(ValueError, match=rf"camera_info stamp {T0} ns: camera is uncalibrated"):
        supervised(bag, tmp_path, need_intrinsics=True)
    with pytest.raises(ValueError, match="camera is uncalibrated"):
        TripletBagDataset(bag, "all", image_size=SIZE, interval=1, cache_dir=tmp_path / "c", progress=False)


def test_bad_depth(tmp_path):
    bag = tmp_path / "bag"
    with BagWriter(bag) as w:
        for i in range(2):
            t = T0 + i * PERIOD
            w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "c", image_fields(frame_rgb(i), "rgb8")), topics.IMAGE_TYPE)
            d = np.full((H0, W0), np.inf if i else 2.0, np.float32)
            w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "c", image_fields(d, "32FC1")), topics.IMAGE_TYPE)
            w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t, "m", echo_fields(frame_echo(i), 44_100, BATVISION_CHIRP)),
                    topics.ECHO_TYPE)
    with pytest.raises(ValueError, match=rf"/camera/depth/image stamp {T0 + PERIOD} ns: no valid depth pixel"):
        supervised(bag, tmp_path)
    assert supervised(bag, tmp_path, skip_bad=True).report["bad depth (skipped)"] == 1


@pytest.mark.parametrize("storage", ["sqlite3"])
def test_sqlite_bag(tmp_path, storage):
    bag = write_bag(tmp_path / "bag", n=3, storage=storage)
    ds = supervised(bag, tmp_path, stft=StftSettings(log=True))
    assert len(ds) == 3 and torch.isfinite(ds[0]["echo"]).all()


def write_fine_depth_bag(path, depth_hw=(2 * H0, 2 * W0), n=4, sequences=None, odd_size_at=None):
    """Images at H0 x W0 with depth at depth_hw (default twice the image size): a one-pixel checkerboard of 2 m and 4 m
    (nearest downsampling keeps only one of the two), a NaN and a pixel beyond max_depth. Frame `odd_size_at` gets depth
    at another size."""
    depths = []
    with BagWriter(path) as w:
        for i in range(n):
            t = T0 + i * PERIOD
            hw = (3 * H0, 3 * W0) if i == odd_size_at else depth_hw
            yy, xx = np.mgrid[:hw[0], :hw[1]]
            depth = np.where((yy + xx) % 2 == 0, 2.0, 4.0).astype(np.float32) + 0.1 * i
            depth[0, 0], depth[3, 5] = np.nan, 50.0
            depths.append(depth)
            w.write(topics.CAMERA_INFO, make_msg(topics.CAMERA_INFO_TYPE, t, "cam", camera_info_fields(K0, W0, H0)),
                    topics.CAMERA_INFO_TYPE)
            w.write(topics.IMAGE, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(frame_rgb(i), "rgb8")), topics.IMAGE_TYPE)
            w.write(topics.DEPTH, make_msg(topics.IMAGE_TYPE, t, "cam", image_fields(depth, "32FC1")), topics.IMAGE_TYPE)
            w.write(topics.ECHO, make_msg(topics.ECHO_TYPE, t, "mic", echo_fields(frame_echo(i), 44_100, BATVISION_CHIRP)),
                    topics.ECHO_TYPE)
        for seq in sequences or []:
            w.add_sequence(*seq)
    return path, depths


def test_depth_at_native_resolution(tmp_path):
    bag, depths = write_fine_depth_bag(tmp_path / "bag")
    native = supervised(bag, tmp_path, depth_size="native")
    network = supervised(bag, tmp_path)
    assert native.cache.path != network.cache.path
    assert native.depth_size == (2 * H0, 2 * W0) and network.depth_size == SIZE
    for i in range(4):
        expected = np.where(np.isfinite(depths[i]) & (depths[i] < 30.0), depths[i], 0.0)
        np.testing.assert_array_equal(native[i]["depth"][0].numpy(), expected)  # as recorded, invalid -> 0
        assert native[i]["rgb"].shape == (3, *SIZE)  # the network input is resized as before
        torch.testing.assert_close(native[i]["echo"], network[i]["echo"])
    # Nearest downsampling by 4 (source pixels 4j + 2) keeps one colour of the checkerboard; the native map has both.
    assert set(np.unique(network[0]["depth"].numpy())) == {2.0}
    assert set(np.unique(native[0]["depth"].numpy())) == {0.0, 2.0, 4.0}
    batch = next(iter(DataLoader(native, batch_size=4)))
    assert batch["depth"].shape == (4, 1, 2 * H0, 2 * W0)
    explicit = supervised(bag, tmp_path, depth_size=(H0, W0))
    assert explicit[0]["depth"].shape == (1, H0, W0) and explicit.cache.path not in (native.cache.path, network.cache.path)
    triples = TripletBagDataset(bag, "all", image_size=SIZE, interval=1, cache_dir=tmp_path / "cache", progress=False,
                                verbose=False, depth_size="native")
    assert triples[0]["depth"].shape == (1, 2 * H0, 2 * W0) and triples[0]["has_depth"]
    with pytest.raises(ValueError, match="depth_size must be None"):
        supervised(bag, tmp_path, depth_size="full")


def test_native_depth_caches_only_its_split_and_needs_one_size(tmp_path):
    bag, _ = write_fine_depth_bag(tmp_path / "bag", n=6, sequences=[("a", "train", T0, T0 + 3 * PERIOD),
                                                                     ("b", "test", T0 + 4 * PERIOD, T0 + 5 * PERIOD)])
    test = supervised(bag, tmp_path, "test", depth_size="native")
    assert len(test) == 2 and len(test.cache) == 2 and test.report == {}
    assert len(supervised(bag, tmp_path, "test")) == 2 and len(supervised(bag, tmp_path, "test").cache) == 6
    with pytest.raises(ValueError, match="unknown split 'tst'"):
        supervised(bag, tmp_path, "tst", depth_size="native")
    mixed, _ = write_fine_depth_bag(tmp_path / "mixed", odd_size_at=2)
    with pytest.raises(ValueError, match=rf"stamp {T0 + 2 * PERIOD} ns: depth 48x36 differs from the 32x24 .*one size per bag"):
        supervised(mixed, tmp_path, depth_size="native")
    skipped = supervised(mixed, tmp_path, depth_size="native", skip_bad=True)
    assert len(skipped) == 3 and skipped.report == {"bad depth (skipped)": 1}
    assert len(supervised(mixed, tmp_path)) == 4  # resized to the network size, any recorded size works


def test_cache_key_of_existing_caches_is_unchanged():
    """The depth_size, split and stft.range_profile options, left unset, do not change the key of caches built before
    they existed; set, they do."""
    import hashlib
    import json
    from dataclasses import asdict

    settings = cache_module.CacheSettings(image_size=SIZE, keep="paired", max_depth=30.0, echo_size=ECHO_SIZE)
    before = {k: v for k, v in asdict(settings).items() if k not in ("depth_size", "split")}
    del before["stft"]["range_profile"]  # added with the time-of-flight features; unset, the key stays
    text = json.dumps({"version": cache_module.CACHE_VERSION, "bag": "f" * 64, "settings": before}, sort_keys=True)
    assert settings.key("f" * 64) == hashlib.sha256(text.encode()).hexdigest()[:24]
    native = cache_module.CacheSettings(image_size=SIZE, keep="paired", max_depth=30.0, echo_size=ECHO_SIZE,
                                        depth_size="native", split="test")
    assert native.key("f" * 64) != settings.key("f" * 64)
    from avs_depth_core.audio.features import StftSettings
    from avs_depth_core.audio.range_profile import RangeProfileSettings

    ranged = cache_module.CacheSettings(image_size=SIZE, keep="paired", max_depth=30.0, echo_size=ECHO_SIZE,
                                        stft=StftSettings(range_profile=RangeProfileSettings()))
    assert ranged.key("f" * 64) != settings.key("f" * 64)
    # linear range bins (the default) keep the key the range profile had before spacing and min_range existed
    profile = asdict(ranged)["stft"]["range_profile"]
    del profile["spacing"], profile["min_range"]
    old = {**{k: v for k, v in asdict(ranged).items() if k not in ("depth_size", "split")}}
    old["stft"]["range_profile"] = profile
    text = json.dumps({"version": cache_module.CACHE_VERSION, "bag": "f" * 64, "settings": old}, sort_keys=True)
    assert ranged.key("f" * 64) == hashlib.sha256(text.encode()).hexdigest()[:24]
    logged = cache_module.CacheSettings(image_size=SIZE, keep="paired", max_depth=30.0, echo_size=ECHO_SIZE,
                                        stft=StftSettings(range_profile=RangeProfileSettings(spacing="log")))
    assert logged.key("f" * 64) != ranged.key("f" * 64)
