"""ad.load does not believe the file: every dataset is checked against the metadata before it is
read, the values after, the fingerprint of stored training images is recomputed, and one image is
denoised; each lie is a FileFormatError naming the file and what is wrong."""

import json

import h5py
import numpy as np
import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core.artifact import FileFormatError
from references import TINY_UNET, tiny_images

X = tiny_images(9, (1, 4, 4), seed=80, dtype=torch.float32)


def saved(tmp_path, est, name):
    return est.fit(X).save(tmp_path / name)


def forge(path, change):
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def replace(f, key, shape, data=None):
    del f["state"][key]
    ds = f["state"].create_dataset(key, shape=shape, dtype="float32", data=data, chunks=data is None or None,
                                   compression="gzip" if data is None else None)
    ds.attrs["kind"] = "tensor"


def test_a_file_cannot_declare_more_than_it_holds(tmp_path):
    path = saved(tmp_path, ad.EmpiricalOptimalDenoiser(), "emp.h5")
    for n in (400_000, 10**12):  # 14 KB declaring 25 MB, or a shape no memory holds
        def lie(f):
            replace(f, "data_", (n, 1, 4, 4))
            f.attrs["n_samples"] = n
        forge(path, lie)
        with pytest.raises(FileFormatError, match="emp.h5: state/data_ declares .* but stores"):
            ad.load(path)


def test_training_images_must_match_the_metadata_and_the_fingerprint(tmp_path):
    path = saved(tmp_path, ad.EmpiricalOptimalDenoiser(), "emp.h5")
    forge(path, lambda f: f.attrs.__setitem__("n_samples", 8))
    with pytest.raises(FileFormatError, match="data_ has shape .* but the file describes 8 images"):
        ad.load(path)
    path = saved(tmp_path, ad.EmpiricalOptimalDenoiser(), "flip.h5")
    flipped = X.numpy().copy()
    flipped[3, 0, 1, 2] = np.nextafter(flipped[3, 0, 1, 2], 2)  # one changed bit
    forge(path, lambda f: f["state"]["data_"].__setitem__(Ellipsis, flipped))
    with pytest.raises(FileFormatError, match="do not match the file's fingerprint"):
        ad.load(path)
    assert ad.load(path, verify=False).data_[3, 0, 1, 2] == torch.tensor(flipped[3, 0, 1, 2])
    flipped[0, 0, 0, 0] = np.nan
    forge(path, lambda f: f["state"]["data_"].__setitem__(Ellipsis, flipped))
    with pytest.raises(FileFormatError, match="state/data_ holds NaN or Inf"):
        ad.load(path, verify=False)


def test_state_that_does_not_fit_together_is_found_by_one_denoise(tmp_path):
    path = saved(tmp_path, ad.GaussianDenoiser(), "gauss.h5")
    forge(path, lambda f: replace(f, "eigvecs_", (16, 3), np.zeros((16, 3), np.float32)))
    with pytest.raises(FileFormatError, match="gauss.h5: the stored GaussianDenoiser cannot denoise"):
        ad.load(path)
    path = saved(tmp_path, ad.UNetDenoiser(**TINY_UNET), "unet.h5")
    params = json.loads(h5py.File(path, "r").attrs["params"])
    forge(path, lambda f: f.attrs.__setitem__("params", json.dumps({**params, "base_channels": 16})))
    with pytest.raises(FileFormatError, match="unet.h5: the stored UNetDenoiser cannot denoise"):
        ad.load(path)


@pytest.mark.parametrize("change, match", [
    (lambda f: f.attrs.__delitem__("schema_version"), "no schema_version"),
    (lambda f: f.attrs.__setitem__("schema_version", -1), "schema_version -1 does not exist"),
    (lambda f: f.attrs.__setitem__("params", "[1, 2]"), "params must be a JSON object"),
    (lambda f: f["state"].create_dataset("stolen_", data=np.zeros(3)).attrs.__setitem__("kind", "ndarray"),
     r"unknown fitted state \['stolen_'\]"),
    (lambda f: (f["state"].__delitem__("mean_"), f["state"].create_dataset("mean_", data=np.array([b"x"]))),
     "not a numeric array"),
])
def test_metadata_lies_are_refused(tmp_path, change, match):
    path = forge(saved(tmp_path, ad.GaussianDenoiser(), "gauss.h5"), change)
    with pytest.raises(FileFormatError, match=match):
        ad.load(path)
