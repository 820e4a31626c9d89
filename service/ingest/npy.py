"""Reading untrusted .npy files without pickle and without holding them in memory.

`inspect_npy` reads only the header and checks it against the file's length, so a truncated
file, an object (pickle) dtype or a lying shape is refused before any data is touched.
`iter_rows` memory-maps the file and hands out row chunks; after each chunk it tells the kernel
the pages are no longer needed (MADV_DONTNEED), because mapped file pages count in the process's
resident memory and a 1 GB array read end to end would otherwise show up as 1 GB of RSS.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from spotlight.contract.errors import InvalidInput
from spotlight.contract.protocol import ErrorCode

NPY_MAGIC = b"\x93NUMPY"
CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class NpyInfo:
    path: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fortran_order: bool
    offset: int

    @property
    def elements(self) -> int:
        """The element count, as a Python int: a header's shape may multiply past int64."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.elements * self.dtype.itemsize


def bad_file(field: str, message: str, **details: Any) -> InvalidInput:
    return InvalidInput(ErrorCode.BAD_FILE, f"{field}: {message}", {"field": field, **details})


def inspect_npy(path: str, field: str) -> NpyInfo:
    """Header, dtype and length checks; raises 400 bad_file on anything that is not a whole .npy."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                # 3.0 differs from 2.0 only in encoding its header as UTF-8 instead of latin-1, which
                # matters only for non-latin-1 names of structured fields; every dtype accepted here
                # (numbers, strings) has a plain ASCII header, so the public 2.0 reader reads both.
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]} is not one numpy writes (1.0-3.0)")
        except Exception as exc:  # noqa: BLE001 - numpy raises ValueError, SyntaxError, EOFError... on junk
            raise bad_file(field, f"not a valid .npy file ({exc})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise bad_file(field, "object arrays are refused: loading them would need pickle; save numbers or strings")
    if any(int(s) < 0 for s in shape):
        raise bad_file(field, "negative dimension in the header")
    info = NpyInfo(path, tuple(int(s) for s in shape), dtype, bool(fortran), offset)
    expected = offset + info.nbytes
    if size < expected:
        raise bad_file(
            field,
            f"truncated: the header promises {expected} bytes, the file has {size}",
            expected_bytes=expected,
            actual_bytes=size,
        )
    if size > expected:
        raise bad_file(field, f"{size - expected} unexpected bytes after the array data", expected_bytes=expected)
    return info


def iter_rows(info: NpyInfo, chunk_bytes: int = CHUNK_BYTES) -> Iterator[np.ndarray]:
    """Yield copies of consecutive row blocks (axis 0) of a checked .npy, a few MB at a time."""
    n = info.shape[0] if info.shape else 1
    row_bytes = max(1, info.nbytes // max(n, 1))
    rows = max(1, chunk_bytes // row_bytes)
    if info.nbytes == 0:
        for start in range(0, n, rows):
            yield np.zeros((min(rows, n - start),) + info.shape[1:], dtype=info.dtype)
        return
    with open(info.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        arr = np.ndarray(
            info.shape, dtype=info.dtype, buffer=mm, offset=info.offset, order="F" if info.fortran_order else "C"
        )
        try:
            for start in range(0, n, rows):
                yield np.array(arr[start : start + rows])
                if hasattr(mm, "madvise"):
                    mm.madvise(mmap.MADV_DONTNEED)
        finally:
            del arr


def load_small(info: NpyInfo) -> np.ndarray:
    """Load a whole (small: ids, labels of a few MB) array into memory, pickle refused."""
    return np.load(info.path, allow_pickle=False)


class NpyWriter:
    """Append row chunks to a new .npy of known shape (for arrays converted from Parquet or JSON)."""

    def __init__(self, path: str, dtype: np.dtype[Any] | str, shape: tuple[int, ...]) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self._f: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        np.lib.format.write_array_header_1_0(
            self._f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        )

    def write(self, chunk: np.ndarray) -> None:
        self._f.write(np.ascontiguousarray(chunk, dtype=self.dtype).tobytes())

    def close(self) -> None:
        self._f.close()


def save_npy(path: str, array: np.ndarray) -> str:
    np.save(path, array, allow_pickle=False)
    return path
