"""Unpacking an untrusted .npz (a zip of .npy files) onto disk, with zip-bomb guards.

Before inflating anything: at most a few members, each named `<key>.npy` after a known key, no
encryption, a declared total size within the upload limit, and no member whose declared
compression ratio only a bomb reaches. While inflating: the bytes written are counted against the
declared size and the limit again (a zip can lie about sizes), and zipfile's CRC check catches
corrupted data. Each member becomes a plain .npy in the work folder, read later like an upload.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Mapping

from spotlight.contract import columns as colmap
from spotlight.contract.errors import InvalidInput, TooLarge
from spotlight.contract.protocol import DATASET_FIELDS, ErrorCode

MAX_MEMBERS = 16
# Float data deflates ~1.1x, small-int labels ~20-60x; deflate itself stops near 1032x.
MAX_RATIO = 250
RATIO_CHECK_MIN_BYTES = 8 * 1024 * 1024
COPY_CHUNK = 1024 * 1024


def _bad(message: str, **details: object) -> InvalidInput:
    return InvalidInput(ErrorCode.BAD_FILE, f"npz: {message}", {"format": "npz", **details})


def _fields_of(names: list[str], columns: Mapping[str, str] | None) -> dict[str, str]:
    """{member key: dataset field} by spotlight/contract/columns.py (aliases, or the caller's mapping)."""
    try:
        by_field = colmap.resolve(names, columns)
    except colmap.ColumnError as exc:
        raise InvalidInput(ErrorCode.VALIDATION, f"npz: {exc.message}", {"keys": names, **exc.details}) from None
    out = {key: field for field, key in by_field.items()}
    if "metadata" in names and "metadata" not in out:
        out["metadata"] = "metadata"
    unknown = [k for k in names if k not in out]
    if unknown:
        raise InvalidInput(
            ErrorCode.VALIDATION,
            f"npz: unknown key(s) {unknown}; found {names}. Expected some of {', '.join(DATASET_FIELDS)} "
            "(or a common alias such as embedding, loss, label, pred, id), or map yours with "
            'columns={"embeddings": "<key>", ...}',
            {"key": unknown[0], "keys": names, "allowed": list(DATASET_FIELDS)},
        )
    return out


def extract_npz(
    path: str, work_dir: str, max_total_bytes: int, columns: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return {field: path of the extracted .npy}; raise 400 bad_file / 413 payload_too_large.

    Keys are the dataset's fields, a common alias of one, or what `columns` maps a field to.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise _bad(f"not a readable zip archive ({exc})") from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if not infos:
            raise _bad("the archive is empty")
        if len(infos) > MAX_MEMBERS:
            raise _bad(f"{len(infos)} members; at most {MAX_MEMBERS} are expected")
        keys: dict[str, zipfile.ZipInfo] = {}
        member_keys = [i.filename[:-4] if i.filename.endswith(".npy") else i.filename for i in infos]
        field_of = _fields_of(member_keys, columns)
        for info, member_key in zip(infos, member_keys, strict=True):
            name = info.filename
            key = field_of[member_key]
            if "/" in name:
                raise InvalidInput(
                    ErrorCode.VALIDATION,
                    f"npz: member {name!r} is in a folder; expected flat keys",
                    {"key": member_key},
                )
            if key in keys:
                raise _bad(f"key {key!r} appears twice")
            if info.flag_bits & 0x1:
                raise _bad("encrypted members are not supported")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise _bad(f"{name}: compression method {info.compress_type} is not supported (use np.savez)")
            if (
                info.compress_type == zipfile.ZIP_DEFLATED
                and info.file_size > RATIO_CHECK_MIN_BYTES
                and info.file_size > MAX_RATIO * max(info.compress_size, 1)
            ):
                raise _bad(
                    f"{name} claims to inflate {info.compress_size} bytes into {info.file_size} "
                    f"(ratio over {MAX_RATIO}); refused as a likely zip bomb",
                    member=name,
                    compressed=info.compress_size,
                    declared=info.file_size,
                )
            keys[key] = info
        declared = sum(i.file_size for i in keys.values())
        if declared > max_total_bytes:
            raise TooLarge(
                ErrorCode.TOO_LARGE,
                f"npz: its members would inflate to {declared} bytes, over the limit of {max_total_bytes}",
                {"declared_bytes": declared, "limit_bytes": max_total_bytes},
            )
        out: dict[str, str] = {}
        written_total = 0
        for key, info in keys.items():
            dest = os.path.join(work_dir, f"npz-{key}.npy")
            written = 0
            try:
                with zf.open(info) as src, open(dest, "wb") as dst:
                    while True:
                        block = src.read(COPY_CHUNK)
                        if not block:
                            break
                        written += len(block)
                        written_total += len(block)
                        if written > info.file_size or written_total > max_total_bytes:
                            raise _bad(f"{info.filename} inflates past its declared size; refused")
                        dst.write(block)
            except InvalidInput:
                raise
            except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
                raise _bad(f"{info.filename} is corrupt or truncated ({exc})") from None
            out[key] = dest
        return out
