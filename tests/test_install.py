"""The package installs like a package: its wheel carries the shipped data (the default dataset,
its MIT licence and the reference UNet) and the shipped protocol files as package data, copied
from the one copy in ``data/`` and ``benchmarks/protocols/``.

The wheel is built from a copy of the checkout (so that the build leaves no ``build/`` behind)
without build isolation, with the setuptools of this environment (the ``test`` extra asks for
one that builds wheels by itself): nothing is downloaded. ``.ci/run`` does the full check, a
fresh virtualenv and a tiny benchmark from a folder outside the clone.
"""
import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
PROTOCOLS = ROOT / "benchmarks" / "protocols"
SOURCES = ("setup.cfg", "pyproject.toml", "MANIFEST.in", "README.md", "LICENSE",
           "analytic_denoisers", "data", "benchmarks/protocols")


def shipped_files():
    """{path in the wheel: the file in data/} for every file that must ship."""
    sums = (DATA / "fashion-mnist-default" / "SHA256SUMS").read_text().split()[1::2]
    files = {f"fashion-mnist-default/{name.lstrip('*')}" for name in sums}
    files |= {"fashion-mnist-default/SHA256SUMS", "unet-default.h5", "LICENSE-fashion-mnist"}
    shipped = {f"analytic_denoisers/_data/{name}": DATA / name for name in sorted(files)}
    return shipped | {f"analytic_denoisers/_data/protocols/{p.name}": p for p in sorted(PROTOCOLS.glob("*.json"))}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def pip(*args, cwd=None, env=None):
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    if not (ROOT / "setup.cfg").is_file() or not (DATA / "README.md").is_file():
        pytest.skip("not a checkout of the repository")
    find = importlib.util.find_spec
    if find("setuptools") is None or not (find("setuptools.command.bdist_wheel") or find("wheel")):
        pytest.skip("building a wheel without downloads needs setuptools>=70.1 (or wheel) installed")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():  # the symlinks in analytic_denoisers/_data/ stay symlinks
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"),
        str(src))
    (found,) = (tmp / "dist").glob("analytic_denoisers-*.whl")
    return found


def test_wheel_ships_the_data(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member, source in shipped_files().items():
            assert member in names, f"{member} is not in the wheel"
            assert not stat.S_ISLNK(archive.getinfo(member).external_attr >> 16), f"{member} is a link"
            assert sha256(archive.read(member)) == sha256(source.read_bytes()), member
        data = {n for n in names if n.startswith("analytic_denoisers/_data/")}
        assert data == set(shipped_files()), "only the shipped files, nothing else from data/ or benchmarks/"
        assert [n for n in names if ".dist-info/" in n and n.endswith("/LICENSE-fashion-mnist")]
        assert not [n for n in names if n.startswith("data/") or n.endswith("build_default.py")]


@pytest.mark.slow
def test_installed_wheel_finds_the_data_outside_the_clone(wheel, tmp_path):
    """A non-editable install, run from another folder without the environment variables."""
    site = tmp_path / "site"
    pip("install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANALYTIC_DENOISERS_")}
    env["PYTHONPATH"] = str(site)  # ahead of this environment's (editable) install
    code = ("import analytic_denoisers as ad; from analytic_denoisers import bench; "
            "print(ad.__file__, ad.datasets.DEFAULT_DIR, bench.protocol.DEFAULT_REFERENCE, "
            "bench.protocol.PROTOCOLS_DIR, sep='\\n'); "
            "print(tuple(ad.datasets.load('default', 'test').shape)); "
            "print(type(ad.load(bench.reference_path(bench.make_protocol()))).__name__); "
            "print(bench.make_protocol(path='lukoianov-ddim10')['sampling']['schedule'])")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    *paths, shape, reference, schedule = result.stdout.splitlines()
    for path in paths:
        assert Path(path).resolve().is_relative_to(site.resolve()), path
    assert shape == "(1000, 1, 28, 28)" and reference == "UNetDenoiser" and schedule == "vp"
