"""Statistics on Dask (kernels.moments.dask_statistics): GaussianDenoiser and PCA-locality fitted
from a dask.array equal the in-memory fit to 1e-10 in float64, for several chunkings and on the
local schedulers and a dask.distributed cluster; bad blocks are refused by name."""

import dask
import dask.array as da
import numpy as np
import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.moments import dask_statistics, moments
from references import gaussian_problem, tiny_images

CHUNKINGS = [1, 7, (50, 1, 2, 3), 500]  # rows per block, or blocks along every dimension


def assert_same_fit(lazy, eager):
    for name in ("mean_", "covariance_", "eigvals_"):
        torch.testing.assert_close(getattr(lazy, name), getattr(eager, name), rtol=0, atol=1e-10)
    for name in ("image_shape_", "n_samples_seen_", "value_range_", "fingerprint_"):
        assert getattr(lazy, name) == getattr(eager, name)


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_gaussian_fit_from_dask_equals_the_in_memory_fit(chunks, scheduler):
    X, _, _ = gaussian_problem(d_shape=(1, 3, 4), n=123, seed=2)
    eager = ad.GaussianDenoiser(chunk_size=16).fit(X)
    with dask.config.set(scheduler=scheduler):
        lazy = ad.GaussianDenoiser(chunk_size=16).fit(da.from_array(X.numpy(), chunks=chunks))
    assert_same_fit(lazy, eager)
    x = X[:4] + 0.3
    for sigma in (1e-2, 1.0, 1e2):
        torch.testing.assert_close(lazy(x, sigma), eager(x, sigma), rtol=0, atol=1e-10)


def test_partial_fit_mixes_dask_and_memory_and_moments_merge_as_one_pass():
    X, _, _ = gaussian_problem(d_shape=(1, 3, 3), n=90, seed=5)
    mixed = ad.GaussianDenoiser().fit(X[:40]).partial_fit(da.from_array(X[40:].numpy(), chunks=11))
    assert_same_fit(mixed, ad.GaussianDenoiser().fit(X))
    total, summary = dask_statistics(da.from_array(X.numpy(), chunks=13), scheduler="synchronous")
    one_pass = moments(X)
    assert total.count == one_pass.count == summary["n_samples_seen_"] == 90
    torch.testing.assert_close(total.scatter, one_pass.scatter, rtol=0, atol=1e-10)


def test_fit_on_a_distributed_cluster():
    import distributed  # the dask extra installs it
    X = tiny_images(60, (1, 4, 4), seed=7)
    with distributed.Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None):
        lazy = ad.GaussianDenoiser().fit(da.from_array(X.numpy(), chunks=9))
    assert_same_fit(lazy, ad.GaussianDenoiser().fit(X))


def test_fit_with_the_processes_scheduler():
    X = tiny_images(30, (1, 3, 3), seed=8)
    with dask.config.set(scheduler="processes", num_workers=2):
        lazy = ad.GaussianDenoiser().fit(da.from_array(X.numpy(), chunks=10))
    assert_same_fit(lazy, ad.GaussianDenoiser().fit(X))


@pytest.mark.parametrize("labels", [False, True])
def test_pca_locality_statistics_from_dask(labels):
    X = tiny_images(40, (1, 4, 4), seed=9)
    y = torch.arange(40) % 3 if labels else None
    eager = ad.PCALocalityDenoiser().fit(X, y)
    with dask.config.set(scheduler="threads"):
        lazy = ad.PCALocalityDenoiser().fit(da.from_array(X.numpy(), chunks=(7, 1, 2, 4)), y)
    for name in ("mean_", "eigvals_", "class_eigvals_"):
        if getattr(eager, name) is not None:
            torch.testing.assert_close(getattr(lazy, name), getattr(eager, name), rtol=0, atol=1e-10)
    assert torch.equal(lazy.data_, eager.data_) and lazy.fingerprint_ == eager.fingerprint_
    x = X[:3] + 0.1
    for sigma in (0.05, 1.0):
        torch.testing.assert_close(lazy(x, sigma, y[:3] if labels else None),
                                   eager(x, sigma, y[:3] if labels else None), rtol=0, atol=1e-8)


def test_bad_dask_input_is_refused():
    X = tiny_images(20, (1, 3, 3), seed=1).numpy()
    X[13, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="block of the dask array.*NaN"):
        ad.GaussianDenoiser().fit(da.from_array(X, chunks=5))
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        ad.GaussianDenoiser().fit(da.zeros((4, 9), chunks=2))
    den = ad.GaussianDenoiser().fit(tiny_images(5, (1, 3, 3), seed=2))
    with pytest.raises(ValueError, match="fitted on images of shape"):
        den.partial_fit(da.zeros((4, 1, 4, 4), chunks=2))


def test_cli_fit_with_dask_equals_the_plain_fit(tmp_path):
    import distributed

    from analytic_denoisers.cli import main

    common = ["--limit", "120", "--labels", "--param", "threshold=0.01"]
    assert main(["fit", "pca-locality", *common, "-o", str(tmp_path / "plain.h5")]) == 0
    assert main(["fit", "pca-locality", *common, "--dask", "threads", "--dask-rows", "50",
                 "-o", str(tmp_path / "threads.h5")]) == 0
    with distributed.LocalCluster(processes=False, n_workers=1, dashboard_address=None) as cluster:
        assert main(["fit", "gaussian", "--limit", "120", "--dask", cluster.scheduler_address, "--dask-rows", "7",
                     "-o", str(tmp_path / "cluster.h5")]) == 0
    assert main(["fit", "gaussian", "--limit", "120", "-o", str(tmp_path / "gaussian.h5")]) == 0
    for lazy, eager in (("threads", "plain"), ("cluster", "gaussian")):
        lazy, eager = ad.load(tmp_path / f"{lazy}.h5"), ad.load(tmp_path / f"{eager}.h5")
        torch.testing.assert_close(lazy.eigvals_, eager.eigvals_, rtol=0, atol=1e-10)
        assert lazy.fingerprint_ == eager.fingerprint_
    assert main(["fit", "empirical", "--dask", "threads", "-o", str(tmp_path / "e.h5")]) == 2
    assert main(["fit", "gaussian", "--dask", "somewhere", "-o", str(tmp_path / "e.h5")]) == 2


def test_rows_of_unknown_count():
    X = tiny_images(30, (1, 3, 3), seed=4)
    keep = (torch.arange(30) % 3 == 0).numpy()
    lazy = da.from_array(X.numpy(), chunks=7)[da.from_array(keep, chunks=7)]  # chunk sizes unknown (NaN)
    assert np.isnan(lazy.shape[0])
    with dask.config.set(scheduler="synchronous"):
        assert_same_fit(ad.GaussianDenoiser().fit(lazy), ad.GaussianDenoiser().fit(X[torch.from_numpy(keep)]))
        nothing = da.from_array(X.numpy(), chunks=7)[da.from_array(np.zeros(30, bool), chunks=7)]
        with pytest.raises(ValueError, match="holds no images"):
            ad.GaussianDenoiser().fit(nothing)
        with pytest.raises(ValueError, match="row chunks known"):  # class statistics need the labels' blocks
            ad.PCALocalityDenoiser().fit(lazy, torch.zeros(10, dtype=torch.long))
        glob = ad.PCALocalityDenoiser(class_statistics="global").fit(lazy, torch.arange(10) % 2)  # they do not
        torch.testing.assert_close(glob.eigvals_, ad.GaussianDenoiser().fit(X[torch.from_numpy(keep)]).eigvals_,
                                   rtol=0, atol=1e-10)
