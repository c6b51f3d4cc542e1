"""Readers of the standard data-file formats the GPU-size suites use. Numpy only.

* IDX (MNIST, Fashion-MNIST; LeCun et al.): big-endian header ``0x00 0x00 <type> <ndim>``,
  ``ndim`` big-endian uint32 sizes, then the data; gzipped (``.gz``, as distributed) or not.
* CIFAR-10/100 "python version" batches (Krizhevsky 2009): pickled dicts with ``b"data"``
  (``N x 3072`` uint8, channel-major 32x32) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"``
  / ``b"coarse_labels"`` (CIFAR-100). Unpickling runs code named by the file, so these files
  are read with an unpickler that only admits numpy arrays and plain containers.
* safetensors (pretrained weights) through ``safetensors.numpy``.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from suites.spec import DataUnavailableError

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) as an array of its declared type and shape."""
    data = _open_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataUnavailableError(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], dtype=">u4"))
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != count * dtype.itemsize:
        raise DataUnavailableError(
            f"{path}: IDX header declares shape {shape}, the file holds {len(data) - header} bytes"
        )
    return np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped if ``path`` ends in ``.gz`` (test fixtures)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
    payload = header + a.tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


class _ArrayUnpickler(pickle.Unpickler):
    """Admits numpy array reconstruction and nothing else that could run code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def read_cifar_batch(path: Path) -> dict[bytes, Any]:
    """One CIFAR "python version" batch file as its dict (byte-string keys)."""
    try:
        with path.open("rb") as f:
            out = _ArrayUnpickler(io.BufferedReader(f), encoding="bytes").load()  # type: ignore[arg-type]
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataUnavailableError(f"{path} is not a CIFAR python batch: {exc}") from None
    if not isinstance(out, dict) or b"data" not in out:
        raise DataUnavailableError(f"{path} is not a CIFAR python batch (no b'data' entry)")
    return out


def cifar_images(batch: dict[bytes, Any], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64)`` of one batch."""
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataUnavailableError(f"CIFAR batch data has shape {data.shape}, expected (N, 3072)")
    labels = np.asarray(batch[label_key], dtype=np.int64)
    return data.reshape(-1, 3, 32, 32), labels


def write_cifar_batch(path: Path, images: np.ndarray, labels: dict[str, np.ndarray]) -> None:
    """Write a CIFAR-format batch (test fixtures): ``labels`` maps ``"labels"`` or
    ``"fine_labels"``/``"coarse_labels"`` to label arrays."""
    entry: dict[bytes, Any] = {b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)}
    entry.update({k.encode(): [int(v) for v in vals] for k, vals in labels.items()})
    entry[b"batch_label"] = b"fixture"
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=2)


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (needs the ``safetensors`` package)."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise DataUnavailableError(
            "reading pretrained weights needs the safetensors package (pip install safetensors)"
        ) from None
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise DataUnavailableError(f"{path} is not a readable safetensors file: {exc}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        out = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataUnavailableError(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(out, dict):
        raise DataUnavailableError(f"{path} does not hold a JSON object")
    return out
