"""The integrity checks rosbag2's storage formats offer: written into the bags this project writes, verified on reading.

mcap (the MCAP specification, mcap.dev/spec): a CRC-32 per chunk of the uncompressed records (Chunk.uncompressed_crc),
one over the whole data section (DataEnd.data_section_crc) and one over the summary (Footer.summary_crc); zero means
"not available". rosbags writes every one of them as zero, so `add_mcap_crcs` fills them in place once the file is
closed (fixed-size fields: the file keeps its length and layout). `verify_mcap` checks the data and summary CRCs that
are present; rosbags itself checks a chunk's CRC whenever it decompresses the chunk.

sqlite3: SQLite keeps no checksums; `PRAGMA quick_check` verifies the database's structure (pages, b-trees, records),
which finds a truncated or overwritten .db3.

Both formats also carry the bag's metadata (metadata.yaml's content, custom_data with the sequences included) inside the
storage file: the mcap Metadata record "rosbag2" and the sqlite3 `metadata` table. `embedded_metadata` reads it, so a
storage file given without its folder still has its sequences and splits.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"\x89MCAP0\r\n"
OP_FOOTER, OP_CHUNK, OP_METADATA, OP_METADATA_INDEX, OP_DATA_END = 0x02, 0x06, 0x0C, 0x0D, 0x0F
FOOTER_BYTES = 1 + 8 + 8 + 8 + 4  # opcode, length, summary_start, summary_offset_start, summary_crc
BLOCK = 1 << 22


class BagIntegrityError(ValueError):
    """A storage file whose checksums or structure do not hold: truncated, overwritten or damaged."""


def _crc_of_range(f: BinaryIO, start: int, end: int) -> int:
    crc = 0
    f.seek(start)
    left = end - start
    while left > 0:
        block = f.read(min(BLOCK, left))
        if not block:
            raise BagIntegrityError(f"{getattr(f, 'name', 'mcap')}: file ends at byte {end - left}, expected {end}")
        crc = zlib.crc32(block, crc)
        left -= len(block)
    return crc


def _decompress(data: bytes, compression: str, size: int, where: str) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd  # Python >= 3.14
        except ImportError:
            from backports import zstd  # what rosbags uses before 3.14

        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise BagIntegrityError(f"{where}: unknown chunk compression {compression!r}")


def _footer(f: BinaryIO, path: Path) -> tuple[int, int, int, int]:
    """(footer record offset, summary_start, summary_offset_start, summary_crc)."""
    size = f.seek(0, 2)
    if size < len(MAGIC) * 2 + FOOTER_BYTES:
        raise BagIntegrityError(f"{path}: {size} bytes, too short for an MCAP file (truncated)")
    f.seek(0)
    head = f.read(len(MAGIC))
    f.seek(size - len(MAGIC) - FOOTER_BYTES)
    tail = f.read()
    if head != MAGIC or tail[-len(MAGIC):] != MAGIC or tail[0] != OP_FOOTER:
        raise BagIntegrityError(f"{path}: no MCAP magic/footer at the start and end (truncated or not an mcap file)")
    summary_start, summary_offset_start, summary_crc = struct.unpack_from("<QQI", tail, 9)
    return size - len(MAGIC) - FOOTER_BYTES, summary_start, summary_offset_start, summary_crc


def _data_records(f: BinaryIO, path: Path, end: int) -> Any:
    """(offset, opcode, content length) of each data section record, up to and including DataEnd."""
    f.seek(len(MAGIC))
    offset = len(MAGIC)
    while offset < end:
        head = f.read(9)
        if len(head) < 9:
            raise BagIntegrityError(f"{path}: record at byte {offset} cut short (truncated)")
        op, length = struct.unpack("<BQ", head)
        if offset + 9 + length > end:
            raise BagIntegrityError(f"{path}: record at byte {offset} runs past the data section (damaged)")
        yield offset, op, length
        if op == OP_DATA_END:
            return
        offset += 9 + length
        f.seek(offset)
    raise BagIntegrityError(f"{path}: no DataEnd record (the file was not closed)")


def add_mcap_crcs(path: str | Path) -> None:
    """Fill in the chunk, data section and summary CRCs of a closed mcap file written by rosbags (in place)."""
    path = Path(path)
    with path.open("r+b") as f:
        footer_at, summary_start, _, _ = _footer(f, path)
        data_end = None
        for offset, op, _length in list(_data_records(f, path, footer_at)):
            if op == OP_CHUNK:
                f.seek(offset + 9)
                _start, _end, size, _crc = struct.unpack("<QQQI", f.read(28))
                (name_len,) = struct.unpack("<I", f.read(4))
                compression = f.read(name_len).decode()
                (records_len,) = struct.unpack("<Q", f.read(8))
                records = _decompress(f.read(records_len), compression, size, str(path))
                f.seek(offset + 9 + 24)
                f.write(struct.pack("<I", zlib.crc32(records)))
            elif op == OP_DATA_END:
                data_end = offset
        assert data_end is not None
        data_crc = _crc_of_range(f, 0, data_end)
        f.seek(data_end + 9)
        f.write(struct.pack("<I", data_crc))
        summary_from = summary_start or footer_at
        summary_crc = _crc_of_range(f, summary_from, footer_at + 9 + 16)
        f.seek(footer_at + 9 + 16)
        f.write(struct.pack("<I", summary_crc))


def verify_mcap(path: str | Path) -> None:
    """Check an mcap file's structure and the data section and summary CRCs it carries (a zero CRC is not checked)."""
    path = Path(path)
    with path.open("rb") as f:
        footer_at, summary_start, _, summary_crc = _footer(f, path)
        if summary_start and not len(MAGIC) < summary_start <= footer_at:
            raise BagIntegrityError(f"{path}: summary offset {summary_start} outside the file (damaged)")
        if summary_crc and _crc_of_range(f, summary_start or footer_at, footer_at + 9 + 16) != summary_crc:
            raise BagIntegrityError(f"{path}: summary CRC mismatch (the file's index is damaged)")
        data_end = None
        for offset, op, length in _data_records(f, path, summary_start or footer_at):
            if op == OP_DATA_END:
                if length < 4:
                    raise BagIntegrityError(f"{path}: DataEnd record too short (damaged)")
                data_end = offset
        f.seek(data_end + 9)  # type: ignore[operator]
        (data_crc,) = struct.unpack("<I", f.read(4))
        if data_crc and _crc_of_range(f, 0, data_end) != data_crc:  # type: ignore[arg-type]
            raise BagIntegrityError(f"{path}: data CRC mismatch (messages damaged or overwritten)")


def verify_sqlite3(path: str | Path) -> None:
    path = Path(path)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as err:
        raise BagIntegrityError(f"{path}: not a readable sqlite3 database ({err}; truncated or damaged)") from None
    if rows != [("ok",)]:
        raise BagIntegrityError(f"{path}: sqlite3 integrity check failed ({'; '.join(r[0] for r in rows[:3])})")


def verify_storage_file(path: str | Path) -> None:
    path = Path(path)
    if path.suffix == ".mcap":
        verify_mcap(path)
    elif path.suffix == ".db3":
        verify_sqlite3(path)


def _read_string(data: bytes, at: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<I", data, at)
    return data[at + 4: at + 4 + n].decode(), at + 4 + n


def _mcap_metadata(path: Path) -> str | None:
    with path.open("rb") as f:
        footer_at, summary_start, _, _ = _footer(f, path)
        if not summary_start:
            return None
        f.seek(summary_start)
        summary = f.read(footer_at - summary_start)
        at = 0
        while at + 9 <= len(summary):
            op, length = struct.unpack_from("<BQ", summary, at)
            if op == OP_METADATA_INDEX:
                offset, _ = struct.unpack_from("<QQ", summary, at + 9)
                name, _ = _read_string(summary, at + 25)
                if name == "rosbag2":
                    f.seek(offset)
                    op2, length2 = struct.unpack("<BQ", f.read(9))
                    record = f.read(length2)
                    if op2 != OP_METADATA:
                        raise BagIntegrityError(f"{path}: metadata index points at no metadata record (damaged)")
                    _, pos = _read_string(record, 0)
                    (map_len,) = struct.unpack_from("<I", record, pos)
                    pos += 4
                    end = pos + map_len
                    while pos < end:
                        key, pos = _read_string(record, pos)
                        value, pos = _read_string(record, pos)
                        if key == "serialized_metadata":
                            return value
            at += 9 + length
    return None


def _sqlite3_metadata(path: Path) -> str | None:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        if not db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='metadata'").fetchall():
            return None
        row = db.execute("SELECT metadata FROM metadata ORDER BY metadata_version DESC LIMIT 1").fetchone()
    return None if row is None else row[0]


def embedded_metadata(path: str | Path) -> dict[str, Any] | None:
    """The rosbag2 metadata stored inside a storage file (rosbag2_bagfile_information's content), or None."""
    import yaml

    path = Path(path)
    try:
        text = _mcap_metadata(path) if path.suffix == ".mcap" else _sqlite3_metadata(path) if path.suffix == ".db3" else None
    except (struct.error, UnicodeDecodeError, sqlite3.DatabaseError) as err:
        raise BagIntegrityError(f"{path}: embedded bag metadata unreadable ({err})") from None
    if not text:
        return None
    data = yaml.safe_load(text)
    return data.get("rosbag2_bagfile_information", data) if isinstance(data, dict) else None
