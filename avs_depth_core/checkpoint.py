"""Checkpoints: safetensors weights + a JSON file beside them (model kind, config, metadata), nothing pickled.

    <stem>.safetensors        the model state dict
    <stem>.json               {"kind", "config", "meta", "weights", "weights_sha256", "extra"?, ...}
    <stem>.extra.safetensors  optional: tensors of nested training state (optimizer, scheduler, ...) for --resume; its
                              structure (dict keys, numbers, strings) lives under "extra" in the JSON
`path` may be given with or without the .safetensors suffix (a .json path also works).

Metadata vocabulary written by the trainers (train/loop.py): train_config, bag, bag_fingerprint (avs_depth_core.data.cache),
dataset, train_samples, world_size, val, epoch, step. Older checkpoints' spellings are read as these (LEGACY_META_KEYS).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from avs_depth_core.files import OutputError, describe_os_error, fsync_path, sweep_temporaries, temporary_path

FORMAT = "avs_depth.checkpoint"
FORMAT_VERSION = 1
_TENSOR, _TUPLE, _ITEMS = "__tensor__", "__tuple__", "__items__"
# Older metadata keys -> today's (the Monodepth2 trainer wrote bag_sha256 and train_triples, AVS-Net's train_frames).
LEGACY_META_KEYS = {"bag_sha256": "bag_fingerprint", "train_triples": "train_samples", "train_frames": "train_samples"}


def checkpoint_paths(path: str | Path) -> tuple[Path, Path, Path]:
    """(weights .safetensors, config .json, extra .extra.safetensors) for a checkpoint path or stem."""
    path = Path(path)
    name = path.name
    for suffix in (".extra.safetensors", ".safetensors", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if not name:
        raise ValueError(f"{path}: no checkpoint name")
    stem = path.with_name(name)
    return stem.with_name(name + ".safetensors"), stem.with_name(name + ".json"), stem.with_name(name + ".extra.safetensors")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Nested state -> JSON-able structure; tensors go to `tensors` under their path and are referenced by it."""
    if isinstance(obj, torch.Tensor):
        name, n = key, 1
        while name in tensors:  # keys holding "/" could repeat a path
            name, n = f"{key}#{n}", n + 1
        tensors[name] = obj.detach().cpu().contiguous()
        return {_TENSOR: name}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not {_TENSOR, _TUPLE, _ITEMS} & set(obj):
            return {k: _encode(v, f"{key}/{k}", tensors) for k, v in obj.items()}
        for k in obj:
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise ValueError(f"checkpoint extra: key {k!r} under '{key}' is not a string or number")
        return {_ITEMS: [[k, _encode(v, f"{key}/{k}", tensors)] for k, v in obj.items()]}
    raise ValueError(f"checkpoint extra: '{key}' holds a {type(obj).__name__}, which cannot be stored without pickling")


def _decode(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, where) for v in obj]
    if isinstance(obj, dict):
        if _TENSOR in obj:
            if obj[_TENSOR] not in tensors:
                raise ValueError(f"{where}: tensor '{obj[_TENSOR]}' is missing")
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_decode(v, tensors, where) for v in obj[_TUPLE])
        if _ITEMS in obj:
            return {k: _decode(v, tensors, where) for k, v in obj[_ITEMS]}
        return {k: _decode(v, tensors, where) for k, v in obj.items()}
    return obj


def _json_text(path: Path, data: dict[str, Any]) -> str:
    try:
        return json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n"
    except TypeError as error:
        raise ValueError(f"{path}: config/meta must be JSON-serialisable ({error})") from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict[str, Any], kind: str,
                    meta: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the weights, the JSON and (if `extra` is given, e.g. {"optimizer": opt.state_dict(), "scheduler": ...})
    the extra tensors. Returns the .safetensors path.

    Atomic per file: everything is written to hidden temporary files in the same folder first, and only when all of them
    are complete are they renamed into place (os.replace), weights and extra before the JSON. A kill while saving
    therefore leaves either the previous checkpoint or the new one, never a half-written file; a kill between the renames
    leaves new tensors beside the old JSON, which loading rejects through the sha256 the JSON records.
    """
    weights, json_path, extra_path = checkpoint_paths(path)
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(describe_os_error(err, weights.parent)) from None
    sweep_temporaries(weights.parent)
    tensors = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{weights}: state dict entry '{k}' is a {type(v).__name__}, not a tensor")
        tensors[k] = v.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
    staged: list[tuple[Path, Path]] = []  # (temporary, final), renamed in this order
    try:
        tmp_weights = temporary_path(weights)
        staged.append((tmp_weights, weights))
        save_file(tensors, str(tmp_weights))
        data: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "config": config, "meta": meta or {},
            "weights": weights.name, "weights_sha256": _sha256(tmp_weights), "torch_version": torch.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        if extra is not None:
            extra_tensors: dict[str, torch.Tensor] = {}
            structure = _encode(extra, "extra", extra_tensors)
            tmp_extra = temporary_path(extra_path)
            staged.append((tmp_extra, extra_path))
            save_file({k: v.clone() for k, v in extra_tensors.items()}, str(tmp_extra))
            data["extra"] = {"file": extra_path.name, "sha256": _sha256(tmp_extra), "structure": structure}
        text = _json_text(json_path, data)
        tmp_json = temporary_path(json_path)
        staged.append((tmp_json, json_path))
        tmp_json.write_text(text)
        mode = 0o666 & ~_umask()  # safetensors writes owner-only files; checkpoints are shared and installed
        for tmp, _ in staged:
            os.chmod(tmp, mode)
            fsync_path(tmp)
        for tmp, final in staged:
            os.replace(tmp, final)
    except BaseException as err:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        if isinstance(err, SafetensorError) and (code := re.search(r"os error (\d+)", str(err))):
            err = OSError(int(code[1]), os.strerror(int(code[1])))  # safetensors' writer reports I/O errors as text
        if isinstance(err, OSError):  # a full or read-only disk: the previous checkpoint is still in place
            raise OutputError(f"checkpoint not saved, {describe_os_error(err, weights.parent)}") from None
        raise
    if extra is None and extra_path.exists():
        # After the JSON (which no longer names it): a stale optimizer state from an earlier save must not be resumed
        # with these weights, and a kill before this line leaves a file nothing refers to.
        extra_path.unlink()
    return weights


def read_checkpoint_json(path: str | Path) -> dict[str, Any]:
    weights, json_path, _ = checkpoint_paths(path)
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path}: checkpoint config not found (expected beside {weights.name})")
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{json_path}: not an {FORMAT} file (missing 'format': '{FORMAT}')")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{json_path}: format_version {data.get('format_version')}, this code reads {FORMAT_VERSION}")
    for key in ("kind", "config", "weights_sha256"):
        if key not in data:
            raise ValueError(f"{json_path}: missing key '{key}'")
    return data


def _load_tensors(path: Path, sha256: str, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint tensors not found")
    if _sha256(path) != sha256:
        raise ValueError(f"{path}: contents do not match the sha256 recorded in the JSON beside it (file replaced or damaged)")
    try:
        return load_file(str(path), device=str(map_location))
    except SafetensorError as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any], str, dict[str, Any]]:
    """-> (state_dict, config, kind, meta). Checks the JSON format and the weights' sha256."""
    weights, _, _ = checkpoint_paths(path)
    data = read_checkpoint_json(path)
    state = _load_tensors(weights, data["weights_sha256"], map_location)
    return state, data["config"], data["kind"], checkpoint_meta(data)


def checkpoint_meta(data: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a checkpoint JSON in today's vocabulary (LEGACY_META_KEYS renamed; the rest as stored)."""
    meta = dict(data.get("meta") or {})
    for old, new in LEGACY_META_KEYS.items():
        if old in meta:
            value = meta.pop(old)
            meta.setdefault(new, value)
    return meta


def load_checkpoint_extra(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The nested `extra` state saved with the checkpoint (e.g. optimizer and scheduler state dicts), or None if none was."""
    _, _, extra_path = checkpoint_paths(path)
    data = read_checkpoint_json(path)
    if "extra" not in data:
        return None
    tensors = _load_tensors(extra_path, data["extra"]["sha256"], map_location)
    return _decode(data["extra"]["structure"], tensors, str(extra_path))


def load_torch_weights(path: str | Path, what: str = "weights") -> Any:
    """A released PyTorch file (.pt/.pth) read with torch.load(weights_only=True): only tensors and plain containers,
    never pickled code. A file that needs more, or that is damaged, is an error naming it (without torch's advice to
    retry with weights_only=False, which would run whatever the file holds)."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: refused: the {what} file holds pickled objects other than tensors, which are never "
                         "loaded (only weights_only files are read); use the original release file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, struct.error) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable PyTorch {what} file ({first}); the file is truncated or damaged") from None
