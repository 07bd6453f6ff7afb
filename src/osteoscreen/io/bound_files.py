"""A model folder's two files, bound to each other: tensors in safetensors (loading runs no code) and a JSON record.

Writing: the SHA-256 of the record's canonical form (canonical_digest: sorted keys, no whitespace,
every member except `weights_sha256`) goes into the safetensors metadata, and the SHA-256 of the weights file into
the record (`weights_sha256`). Reading checks the format version and both hashes before anything is used, so an
edit of either file, or corruption, is refused. `Model` (model.py) and `LandmarkModel` (landmarking) share this.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

from osteoscreen.core.errors import InputError
from osteoscreen.io.jsoninput import JsonValue, read_json
from osteoscreen.io.outputs import strict_json

#: A record is a few kB; anything much larger is not one.
MAX_INFO_BYTES = 1 << 20
BINDING_KEY = "model_json_sha256"


def canonical_digest(info: dict) -> str:
    """SHA-256 of a record's content without `weights_sha256`, in canonical JSON form (sorted keys, no whitespace)."""
    content = {key: value for key, value in info.items() if key != "weights_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"),
                                     allow_nan=False).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bound(weights_path: Path, info_path: Path, state: dict[str, torch.Tensor], info: dict,
                model_format: int) -> dict:
    """Write the tensors and the record (without `weights_sha256`, which is added), bound; returns the record."""
    from safetensors.torch import save_file

    info = {key: value for key, value in info.items() if key != "weights_sha256"}
    save_file(state, str(weights_path), metadata={"format": str(model_format), BINDING_KEY: canonical_digest(info)})
    info["weights_sha256"] = file_sha256(weights_path)
    info_path.write_text(strict_json(info))
    return info


def read_bound(folder: Path, weights_name: str, info_name: str, model_format: int, what: str,
               check: Callable[[JsonValue], object]) -> tuple[dict, dict[str, torch.Tensor], object]:
    """(the record, the tensors, what `check(record)` returned) of a model folder, refused (InputError naming the
    file) when a file is missing, the format is another, `check` (the record's field checks, which raise) refuses
    it, or either file was altered."""
    from safetensors import SafetensorError, safe_open

    info_path, weights_path = folder / info_name, folder / weights_name
    for path in (info_path, weights_path):
        if not path.is_file():
            raise InputError(f"{path}: not found ({folder} is not {what})")
    document = read_json(info_path, max_bytes=MAX_INFO_BYTES)
    found = document.object().get("format")
    if found != model_format:
        raise InputError(f"{info_path}: model format {found!r}, this osteoscreen reads format {model_format}; "
                         "retrain the model or use the osteoscreen version that wrote it")
    checked = check(document)
    info = document.value
    if file_sha256(weights_path) != info["weights_sha256"]:
        raise InputError(f"{weights_path}: does not match the SHA-256 recorded in {info_path} (corrupt or altered)")
    try:
        with safe_open(str(weights_path), "pt") as handle:  # one read: the binding and the tensors
            binding = (handle.metadata() or {}).get(BINDING_KEY)
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{weights_path}: not a readable safetensors file ({error})") from None
    if binding != canonical_digest(info):
        raise InputError(f"{info_path}: edited after the model was written (its content no longer matches the "
                         f"SHA-256 bound into {weights_name}); refused as tampering: restore it or retrain")
    return info, state, checked
