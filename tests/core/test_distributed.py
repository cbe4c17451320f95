"""Sharded training sets on torch.distributed (core.distributed): 2 and 3 real processes on the
gloo backend (CPU), started here. Every softmax denoiser loaded sharded gives the single-process
result to 1e-6 at sigma 1e-2 to 1e2, with uneven shards and a rank whose shard is empty; each
rank's own queries through GatheredQueries too; ranks passing different queries are refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core import distributed
from analytic_denoisers.core.distributed import GatheredQueries
from references import SIGMAS, near_data, tiny_images

WORKER = Path(__file__).with_name("shard_worker.py")
SHAPE = (2, 6, 7)
LABELS = torch.tensor([0, 1, 2] * 4 + [1])  # 13 images, 3 classes
# world -> each rank's rows (of the data sorted by class); None: shard=(rank, world)
SHARDS = {2: None, 3: [(0, 9), (9, 9), (9, 13)]}  # uneven, and rank 1 holds nothing
DENOISERS = {
    "empirical": (ad.EmpiricalOptimalDenoiser(chunk_size=2), False),
    "empirical-class": (ad.EmpiricalOptimalDenoiser(), True),
    "pca-locality": (ad.PCALocalityDenoiser(threshold=0.005, chunk_size=2), False),
    "pca-locality-class": (ad.PCALocalityDenoiser(threshold=0.005), True),
    "ls": (ad.LocalScoreDenoiser(patch_size=3, chunk_size=2), False),
    "ls-class": (ad.LocalScoreDenoiser(patch_size=5), True),
    "els": (ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="circular"), False),
    "bbels": (ad.LocalScoreDenoiser(patch_size=5, equivariant=True, padding="zeros"), False),
    "pspc": (ad.PatchCompositeDenoiser(patch_size=3, chunk_size=2), False),
    "pspc-class": (ad.PatchCompositeDenoiser(patch_size=4), True),
    # float32: the window kernels' float32 distances are refined where their bound asks for it, PCA-locality
    # keeps its sums in float32: the sharded result is as close as float32 allows (FLOAT32_TOLERANCE)
    "empirical-f32": (ad.EmpiricalOptimalDenoiser(), False),
    "pca-locality-f32": (ad.PCALocalityDenoiser(threshold=0.005, chunk_size=2), False),
    "ls-f32": (ad.LocalScoreDenoiser(patch_size=3, chunk_size=2), False),
    "pspc-f32": (ad.PatchCompositeDenoiser(patch_size=3, chunk_size=2), True),
}
FLOAT32_TOLERANCE = 1e-5
KERNELS = {f"{mode}/{method}": (padding, 3, method) for mode, padding in (("els", "circular"), ("bbels", "zeros"))
           for method in ("shifts", "products")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Fit and save every denoiser, run it in one process, then in 2 and 3 processes (5 at once)."""
    folder = tmp_path_factory.mktemp("shards")
    data = tiny_images(len(LABELS), SHAPE, seed=3)
    x = near_data(data, len(SIGMAS) - 1, 0.1, seed=4)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    y = LABELS[:len(x)]
    files, single = {}, {}
    for name, (den, conditional) in DENOISERS.items():
        dtype = torch.float32 if name.endswith("-f32") else torch.float64
        den.fit(data.to(dtype), LABELS if conditional else None)
        files[name] = (str(den.save(folder / f"{name}.h5")), conditional)
        single[name] = den.denoise(x.to(dtype), sigma.to(dtype), y if conditional else None)
    order = torch.argsort(LABELS, stable=True)  # the sharded kernels get rows of the sorted set, like the files
    for key, (padding, size, method) in KERNELS.items():
        single[key] = ad.equivariant_local_score_posterior_mean(x, sigma, data, size, padding=padding, method=method)
    other = str(ad.EmpiricalOptimalDenoiser().fit(data[1:]).save(folder / "other.h5"))
    torch.save({"x": x, "sigma": sigma, "y": y, "files": files, "kernels": KERNELS, "data": data[order],
                "shards": SHARDS, "other": other}, folder / "spec.pt")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(world), str(folder)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for world in SHARDS for rank in range(world)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    got = {world: [torch.load(folder / f"out-{world}-{rank}.pt") for rank in range(world)] for world in SHARDS}
    return single, got, x


@pytest.mark.parametrize("world", sorted(SHARDS))
@pytest.mark.parametrize("name", [*DENOISERS, *KERNELS])
def test_sharded_result_is_the_single_process_result(runs, name, world):
    single, got, _ = runs
    tolerance = FLOAT32_TOLERANCE if name.endswith("-f32") else 1e-6
    for rank, result in enumerate(got[world]):
        torch.testing.assert_close(result["out"][name], single[name], rtol=0, atol=tolerance,
                                   msg=lambda m: f"rank {rank} of {world}: {m}")


@pytest.mark.parametrize("world", sorted(SHARDS))
@pytest.mark.parametrize("name", DENOISERS)
def test_each_rank_gets_its_own_queries_through_gathered_queries(runs, name, world):
    single, got, x = runs
    tolerance = FLOAT32_TOLERANCE if name.endswith("-f32") else 1e-6
    for rank, result in enumerate(got[world]):
        own = list(range(len(x)))[rank::world]
        torch.testing.assert_close(result["out"][name + "/gathered"], single[name][own], rtol=0, atol=tolerance)
        first = single[name] if rank == 0 else single[name][:0]  # rank 0 asked for every query, the rest none
        torch.testing.assert_close(result["out"][name + "/first"], first, rtol=0, atol=tolerance)


@pytest.mark.parametrize("world", sorted(SHARDS))
def test_ranks_passing_other_queries_are_refused(runs, world):
    _, got, _ = runs
    for result in got[world]:
        errors = dict(result["errors"])
        assert "do not cover the 13 training rows each exactly once" in errors.pop("overlap")
        assert "shards of different training sets" in errors.pop("other-set")
        assert set(errors) == {*DENOISERS, "other-params"}
        assert all("same x, sigma and y with the same denoiser" in message for message in errors.values())
        assert int(result["out"]["bytes"]) > 0


def test_shard_specs_and_refusals(tmp_path):
    assert distributed.as_shard((1, 3), 10) == (3, 6, 10)
    assert distributed.as_shard(slice(4, 4), 10) == (4, 4, 10)
    assert [distributed.even_rows(5, r, 3) for r in range(3)] == [(0, 1), (1, 3), (3, 5)]
    for bad in [(3, 3), (0, 0), slice(2, 11), slice(0, 4, 2), 3]:
        with pytest.raises(ValueError, match="shard"):
            distributed.as_shard(bad, 10)
    data = tiny_images(4, (1, 3, 3), seed=1)
    den = ad.GaussianDenoiser().fit(data)
    path = den.save(tmp_path / "gaussian.h5")
    with pytest.raises(ValueError, match="cannot be sharded"):
        ad.load(path, shard=(0, 1))
    knn = ad.EmpiricalOptimalDenoiser(top_k=2).fit(data)
    with pytest.raises(ValueError, match="top_k=2 would choose its candidates per shard"):
        knn.shard((0, 1))
    with pytest.raises(RuntimeError, match="torch.distributed initialised"):  # no process group here
        ad.EmpiricalOptimalDenoiser().fit(data).shard((0, 1))


def test_a_group_of_one_process(tmp_path):
    import torch.distributed as dist

    data = tiny_images(6, (1, 4, 4), seed=2)
    x = near_data(data, 2, 0.3, seed=3)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rendezvous", rank=0, world_size=1)
    try:
        den = ad.EmpiricalOptimalDenoiser().fit(data)
        with pytest.raises(ValueError, match=r"shards \[\(1, 5\)\] do not cover the 6 training rows"):
            den.shard(slice(1, 5))
        assert den.shard_ is None and torch.equal(den.data_, data)  # a refusal changes nothing
        golddiff = ad.GoldDiffDenoiser().fit(data)
        with pytest.raises(ValueError, match="cannot be sharded"):
            golddiff.shard((0, 1))
        assert golddiff.shard_ is None and len(golddiff.data_) == 6
        with pytest.raises(ValueError, match="wraps a sharded denoiser"):
            GatheredQueries(golddiff)
        den = ad.PatchCompositeDenoiser(patch_size=2).fit(data)
        expect = den(x, 0.3)
        den.shard((0, 1))
        assert den.shard_ == (0, 6, 6)
        torch.testing.assert_close(den(x, 0.3), expect, rtol=0, atol=1e-12)
        with pytest.raises(ValueError, match="already sharded"):
            den.shard((0, 1))
        with pytest.raises(ValueError, match="cannot be saved"):
            den.save(tmp_path / "shard.h5")
        with pytest.raises(ValueError, match="gradients"):
            den(x.clone().requires_grad_(), 0.3)
        assert den.fit(data).shard_ is None  # a new fit is whole again
    finally:
        dist.destroy_process_group()
