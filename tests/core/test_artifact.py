"""The HDF5 artifact format (core.artifact): metadata, state round trips, atomic writes, and clean
failures on bad files."""

import os

import h5py
import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core import artifact as io
from references import tiny_images


@pytest.fixture
def saved(tmp_path):
    X = tiny_images(9, (1, 4, 4), seed=1)
    den = ad.EmpiricalOptimalDenoiser(chunk_size=3).fit(X, torch.tensor([0, 1, 2] * 3))
    return den, den.save(tmp_path / "emp.h5")


def test_metadata_is_recorded(saved):
    den, path = saved
    meta = io.info(path)
    assert meta["class"] == "EmpiricalOptimalDenoiser"
    assert meta["params"] == {"chunk_size": 3, "top_k": None, "temperature": 1.0}
    assert meta["schema_version"] == io.SCHEMA_VERSION and meta["package_version"] == ad.__version__
    assert meta["image_shape"] == [1, 4, 4] and meta["n_samples"] == 9
    assert meta["fingerprint"] == den.fingerprint_
    assert meta["value_range"] == list(den.value_range_)
    assert "data_" in meta["arrays"]


def test_class_conditional_state_round_trips(saved):
    den, path = saved
    back = ad.load(path)
    assert list(back.classes_) == [0, 1, 2] and list(back.class_offsets_) == [0, 3, 6, 9]
    x, y = tiny_images(3, (1, 4, 4), seed=2), torch.tensor([2, 0, 1])
    assert torch.equal(back(x, 0.5, y=y), den(x, 0.5, y=y))


def test_overwrite_is_atomic_and_leaves_no_temporary_files(saved, tmp_path, monkeypatch):
    den, path = saved
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        den.save(path)
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["emp.h5"]


def test_truncated_file_fails_cleanly(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(io.FileFormatError, match="truncated.h5"):
        ad.load(bad)


def test_non_hdf5_and_foreign_files_fail_cleanly(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(io.FileFormatError, match="junk.h5: not an HDF5 file.*may be truncated or corrupt"):
        ad.load(junk)
    weights = tmp_path / "model.pt"  # a network's own weights: say how such a network is used
    torch.save({"w": torch.zeros(2)}, weights)
    with pytest.raises(io.FileFormatError, match="model.pt: not an HDF5 file.*wrapping the loaded network in NetworkDenoiser"):
        ad.load(weights)
    with pytest.raises(io.FileFormatError, match="a folder.*NetworkDenoiser.from_diffusers"):
        ad.load(tmp_path)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = [1, 2, 3]
    with pytest.raises(io.FileFormatError, match="foreign.h5.*not one written by analytic_denoisers"):
        ad.load(foreign)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        ad.load(tmp_path / "missing.h5")


def test_newer_schema_is_refused(saved):
    _, path = saved
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = io.SCHEMA_VERSION + 1
    with pytest.raises(io.FileFormatError, match="newer"):
        ad.load(path)


@pytest.mark.parametrize("damage", [
    lambda f: f.__delitem__("state"),
    lambda f: f["state"].__delitem__("data_"),
    lambda f: f["state"].attrs.__setitem__("scalars", "{}"),
    lambda f: f.attrs.__setitem__("params", "{not json"),
    lambda f: f.attrs.__setitem__("schema_version", "x"),
])
def test_damaged_contents_are_reported(saved, damage):
    _, path = saved
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(io.FileFormatError, match="emp.h5"):
        ad.load(path)


def test_saved_file_is_readable_by_others(saved):
    _, path = saved
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_creates_missing_folders(tmp_path):
    path = ad.GaussianDenoiser().fit(tiny_images(3)).save(tmp_path / "a" / "b" / "g.h5")
    assert ad.load(path).n_samples_seen_ == 3


def test_unfitted_estimator_cannot_be_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ad.GaussianDenoiser().save(tmp_path / "x.h5")


def test_numpy_scalar_hyper_parameters_are_saved_as_numbers(tmp_path):
    import numpy as np

    X = tiny_images(9, (1, 4, 4), seed=2)
    for est in (ad.GaussianDenoiser(rank=np.int64(5)), ad.LocalScoreDenoiser(patch_size=np.int64(3)),
                ad.PCALocalityDenoiser(threshold=np.float32(0.25))):
        params = ad.load(est.fit(X).save(tmp_path / "est.h5")).get_params()
        assert params == pytest.approx(est.get_params())
        assert not any(isinstance(v, np.generic) for v in params.values()), params
