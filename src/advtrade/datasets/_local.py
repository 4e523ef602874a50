"""Readers for MNIST and CIFAR-10 files a user already has on disk (never downloads).

Dependency-free (numpy only). CIFAR-10 is read from its binary release by default; the Python
release is a pickle, and unpickling runs arbitrary code from the file, so it is read only with
an explicit ``allow_unsafe_pickle=True``.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["LOCAL_DATASETS", "load_local"]

LOCAL_DATASETS: tuple[str, ...] = ("mnist", "cifar10")

_NEVER = "advtrade never downloads data"

# --------------------------------------------------------------------------- MNIST (IDX)

_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (the MNIST format), optionally gzipped."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(dims, dtype=np.int64)):
        raise ValueError(f"{path}: size does not match the IDX header dims {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _mnist_missing(root: Path, train: bool, allow_unsafe_pickle: bool = False) -> str:
    folder = root / "MNIST" / "raw"
    listed = "\n  ".join(f"{folder / name} (or {name}.gz)" for name in _MNIST_FILES[train])
    return (
        f"MNIST ({'train' if train else 'test'}) files not found; expected\n  {listed}\n"
        f"{_NEVER} -- put them there in torchvision's layout"
    )


def _read_mnist(root: Path, train: bool, allow_unsafe_pickle: bool) -> tuple[np.ndarray, ...]:
    folder = root / "MNIST" / "raw"
    expected = [folder / name for name in _MNIST_FILES[train]]
    found = []
    for path in expected:
        gz = path.with_name(f"{path.name}.gz")
        found.append(path if path.is_file() else gz if gz.is_file() else None)
    if None in found:
        raise FileNotFoundError(_mnist_missing(root, train))
    images, labels = (_read_idx(path) for path in found if path is not None)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"{folder}: expected images (N, H, W) and labels (N,), got "
            f"{images.shape} and {labels.shape}"
        )
    return images[:, None], labels


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_BIN = "cifar-10-batches-bin"
_CIFAR_PY = "cifar-10-batches-py"
_RECORD = 1 + 3 * 32 * 32  # one label byte, then the R, G and B planes (32x32, row-major)


def _cifar_names(train: bool) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]


def _cifar_paths(root: Path, train: bool) -> tuple[list[Path], list[Path]]:
    """The binary and the pickle files of one split, in reading order."""
    names = _cifar_names(train)
    return (
        [root / _CIFAR_BIN / f"{name}.bin" for name in names],
        [root / _CIFAR_PY / name for name in names],
    )


def _check_labels(labels: np.ndarray, path: Path) -> None:
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise ValueError(
            f"{path}: record {int(bad[0])} has label {int(labels[bad[0]])}, but CIFAR-10 labels "
            f"are 0..9 ({len(bad)} bad record(s)); the file is corrupt or not CIFAR-10 "
            f"(CIFAR-100's binary records have two label bytes)"
        )


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B, row-major 32x32)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise ValueError(
            f"{path}: size {raw.size} bytes is not a positive multiple of {_RECORD} (1 label "
            f"byte + 3072 pixel bytes per CIFAR-10 record); the file is truncated or not the "
            f"CIFAR-10 binary version -- re-extract cifar-10-binary.tar.gz"
        )
    records = raw.reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, path)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _read_cifar_pickle(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """UNSAFE: unpickling runs whatever code the file contains. Only for trusted files."""
    with path.open("rb") as fh:
        batch = pickle.load(fh, encoding="bytes")  # only with allow_unsafe_pickle=True
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path}: expected a pickled dict with b'data' and b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise ValueError(
            f"{path}: expected data (N, 3072) and labels (N,), got {data.shape} and {labels.shape}"
        )
    _check_labels(labels, path)
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels


def _read_cifar10(root: Path, train: bool, allow_unsafe_pickle: bool) -> tuple[np.ndarray, ...]:
    binary, pickled = _cifar_paths(root, train)
    if all(path.is_file() for path in binary):
        parts = [_read_cifar_bin(path) for path in binary]
    elif allow_unsafe_pickle and all(path.is_file() for path in pickled):
        parts = [_read_cifar_pickle(path) for path in pickled]
    else:
        raise FileNotFoundError(_cifar_missing(root, train, allow_unsafe_pickle))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _cifar_missing(root: Path, train: bool, allow_unsafe_pickle: bool) -> str:
    binary, pickled = _cifar_paths(root, train)
    split = "train" if train else "test"
    listed = "\n  ".join(str(p) for p in binary)
    message = f"CIFAR-10 ({split}) binary files not found; expected\n  {listed}\n"
    if allow_unsafe_pickle:
        listed = "\n  ".join(str(p) for p in pickled)
        message += f"or the Python (pickle) version\n  {listed}\n"
    elif (root / _CIFAR_PY).is_dir():
        message += (
            f"{root / _CIFAR_PY} holds the Python (pickle) version, which is not read by default "
            f"because unpickling runs arbitrary code from the file: extract "
            f"cifar-10-binary.tar.gz under {root} (preferred), or, only for files you trust, "
            f"pass allow_unsafe_pickle=True\n"
        )
    return message + f"{_NEVER} -- extract cifar-10-binary.tar.gz under {root}"


# --------------------------------------------------------------------------- public loader


def load_local(
    name: str,
    root: str | os.PathLike[str],
    *,
    train: bool = True,
    allow_unsafe_pickle: bool = False,
) -> tuple[Tensor, Tensor]:
    """Read MNIST or CIFAR-10 already on disk; never downloads, torchvision not required.

    Returns images ``(N, C, H, W)`` float32 in ``[0, 1]`` and int64 labels, read by a small
    numpy reader that validates sizes and labels (a bad file raises ValueError naming it):

    * ``"mnist"``: ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (IDX, ``.gz``
      accepted; torchvision's layout).
    * ``"cifar10"``: the binary release, ``root/cifar-10-batches-bin/data_batch_1.bin`` ...
      ``data_batch_5.bin`` (train) or ``test_batch.bin`` (test).

    ``allow_unsafe_pickle=True`` also accepts CIFAR-10's Python release
    (``root/cifar-10-batches-py/data_batch_1`` ...) when the binary files are absent. That
    release is a pickle, and **unpickling runs arbitrary code from the file**: use it only for
    files you trust. It is ignored for MNIST. Missing files raise FileNotFoundError listing every
    expected path.

    Examples:
        >>> from advtrade.datasets import load_local
        >>> load_local("cifar10", "/no/such/folder")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: dataset root ... is not a directory. CIFAR-10 (train) binary ...
    """
    readers = {"mnist": _read_mnist, "cifar10": _read_cifar10}
    if not isinstance(name, str):
        raise TypeError(f"name must be a string ({', '.join(LOCAL_DATASETS)}), got {name!r}")
    key = name.lower()
    if key not in readers:
        valid = ", ".join(LOCAL_DATASETS)
        raise ValueError(f"unknown local dataset {name!r}; valid names: {valid}")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(
            f"root must be a path (str or os.PathLike) to the folder holding the data, "
            f"got {type(root).__name__} {root!r}"
        )
    for arg, value in (("train", train), ("allow_unsafe_pickle", allow_unsafe_pickle)):
        if not isinstance(value, bool):
            raise TypeError(f"{arg} must be True or False, got {type(value).__name__} {value!r}")
    root = Path(root)
    if not root.is_dir():
        missing = _mnist_missing if key == "mnist" else _cifar_missing
        raise FileNotFoundError(
            f"dataset root {root} is not a directory. {missing(root, train, allow_unsafe_pickle)}"
        )
    images, labels = readers[key](root, train, allow_unsafe_pickle)
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))
