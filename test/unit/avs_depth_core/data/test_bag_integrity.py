"""The bags the project writes carry their format's checksums, reading verifies them, and a bag given as its folder or
as its storage file gives the same frames and splits."""

from __future__ import annotations

import shutil
import struct

import pytest

from avs_depth_core.cli import main
from avs_depth_core.data.bag import BagWriter, bag_sequences, open_bag, resolve_bag
from avs_depth_core.data.bag_integrity import embedded_metadata, verify_mcap
from avs_depth_core.data.datasets import SupervisedBagDataset


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def bag(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param) / "bag"
    assert main(["simulate", "--sequences", "3", "--frames", "3", "--height", "32", "--width", "64", "--storage",
                 request.param, "--out", str(out)]) == 0
    return out


def test_mcap_crcs_are_the_ones_the_reference_reader_checks(bag):
    """The official MCAP reader (foxglove's mcap package) validates chunk, data section and summary CRCs."""
    if not list(bag.glob("*.mcap")):
        pytest.skip("sqlite3 keeps no checksums")
    mcap = pytest.importorskip("mcap.stream_reader")
    path = next(bag.glob("*.mcap"))
    with path.open("rb") as f:
        records = list(mcap.StreamReader(f, validate_crcs=True).records)
    kinds = {type(r).__name__: r for r in records}
    assert kinds["DataEnd"].data_section_crc != 0 and kinds["Footer"].summary_crc != 0
    assert all(r.uncompressed_crc != 0 for r in records if type(r).__name__ == "Chunk")


def test_a_flipped_byte_anywhere_is_found(bag, tmp_path):
    if not list(bag.glob("*.mcap")):
        pytest.skip("mcap only")
    src = next(bag.glob("*.mcap"))
    size = src.stat().st_size
    for at in (0.3, 0.6, 0.97):
        data = bytearray(src.read_bytes())
        data[int(size * at)] ^= 0x01
        (tmp_path / "x.mcap").write_bytes(bytes(data))
        with pytest.raises(ValueError, match="CRC|magic|record|offset"):
            verify_mcap(tmp_path / "x.mcap")


def test_folder_and_storage_file_give_the_same_frames_and_splits(bag, tmp_path):
    storage = resolve_bag(bag).files[0]
    assert resolve_bag(storage).folder == bag
    assert bag_sequences(storage) == bag_sequences(bag) and len(bag_sequences(bag)) == 3
    alone = tmp_path / storage.name  # the storage file without its folder: its embedded metadata holds the sequences
    shutil.copy(storage, alone)
    assert bag_sequences(alone) == bag_sequences(bag)
    assert embedded_metadata(alone)["relative_file_paths"] == [storage.name]
    for split in ("train", "val", "test"):
        stamps = [[int(item["stamp_ns"]) for item in SupervisedBagDataset(
            p, split, image_size=(32, 64), echo_size=(32, 32), max_depth=30.0, cache_dir=tmp_path / "cache",
            progress=False, verbose=False)] for p in (bag, storage, alone)]
        assert stamps[0] == stamps[1] == stamps[2] and stamps[0]


def test_one_file_of_a_split_bag_is_an_error(bag, tmp_path):
    copy = tmp_path / "split"
    shutil.copytree(bag, copy)
    meta = copy / "metadata.yaml"
    storage = resolve_bag(copy).files[0]
    meta.write_text(meta.read_text().replace(f"- {storage.name}", f"- {storage.name}\n  - other{storage.suffix}", 1))
    with pytest.raises(ValueError, match="one of the 2 storage files"):
        resolve_bag(storage)


def test_counts_that_disagree_with_metadata_are_an_error(bag, tmp_path):
    copy = tmp_path / "counts"
    shutil.copytree(bag, copy)
    meta = copy / "metadata.yaml"
    meta.write_text(meta.read_text().replace("message_count: 9", "message_count: 8"))
    with pytest.raises(ValueError, match="disagree"), open_bag(copy):
        pass


def test_an_interrupted_writer_leaves_no_bag(tmp_path):
    with pytest.raises(KeyboardInterrupt), BagWriter(tmp_path / "bag") as writer:
        assert writer.path == tmp_path / "bag"
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_the_data_crc_covers_everything_before_data_end(bag):
    if not list(bag.glob("*.mcap")):
        pytest.skip("mcap only")
    import zlib

    data = next(bag.glob("*.mcap")).read_bytes()
    summary_start = struct.unpack_from("<Q", data, len(data) - 8 - 20)[0]
    data_end = summary_start - 13  # DataEnd: opcode, length, crc
    assert data[data_end] == 0x0F
    assert struct.unpack_from("<I", data, data_end + 9)[0] == zlib.crc32(data[:data_end])
