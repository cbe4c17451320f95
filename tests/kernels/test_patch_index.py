"""The clustered index of training patches (kernels.patch_index): duplicates merged with their
counts, radii that bound every member, and pruned ELS / bbELS within its error bound."""

import pytest
import torch

from analytic_denoisers.kernels.patch_index import build_patch_index, merge_duplicates
from analytic_denoisers.kernels.patches import equivariant_local_score_posterior_mean, equivariant_position_sets
from references import SIGMAS, local_score_reference, near_data, randn, tiny_images


def test_merge_duplicates_counts_identical_rows():
    rows = torch.tensor([[1.0, 2.0], [0.5, 0.0], [1.0, 2.0], [3.0, 1.0], [1.0, 2.0], [0.5, 0.0]])
    distinct, counts = merge_duplicates(rows)
    assert sorted(zip(map(tuple, distinct.tolist()), counts.tolist())) == [
        ((0.5, 0.0), 2), ((1.0, 2.0), 3), ((3.0, 1.0), 1)]
    # a background-heavy set: the index stores each distinct patch once, with its count
    data = tiny_images(6, (1, 6, 6), seed=25)
    data[:, :, :3] = -1
    index = build_patch_index(data, 3, "circular", torch.arange(36), n_clusters=4)
    assert index.total == 6 * 36 and index.offsets[-1] < index.total
    torch.testing.assert_close(index.log_counts.exp().sum(), torch.tensor(216.0, dtype=torch.float64))
    x = near_data(data, 2, 0.05, seed=26)
    exact = equivariant_local_score_posterior_mean(x, 0.05, data, 3)
    pruned = equivariant_local_score_posterior_mean(x, 0.05, data, 3, prune_tol=1e-12, indexes=[index])
    torch.testing.assert_close(pruned, exact, rtol=0, atol=1e-10)


def test_patch_index_radii_bound_every_member():
    data = tiny_images(12, (1, 6, 6), seed=27)
    index = build_patch_index(data, 3, "circular", torch.arange(36), n_clusters=5)
    assert index.offsets[-1] == index.total == 12 * 36 and len(index.centroids) == len(index.offsets) - 1
    queries = randn(20, 9, seed=28)
    for j in range(len(index.centroids)):
        members = index.keys[index.offsets[j]:index.offsets[j + 1], :9]
        nearest = torch.cdist(queries, members).min(1).values  # what the bound must not exceed
        bound = ((queries - index.centroids[j]).norm(dim=1) - index.radii[j]).clamp(min=0)
        assert (bound <= nearest + 1e-12).all()


@pytest.mark.parametrize("padding", ["circular", "zeros"])
@pytest.mark.parametrize("sigma", SIGMAS)
def test_pruned_els_is_within_its_bound(padding, sigma):
    data = tiny_images(10, (2, 6, 6), seed=21)
    x = near_data(data, 2, sigma, seed=22)
    sets = equivariant_position_sets(6, 6, 3, padding)
    indexes = [build_patch_index(data, 3, padding, pos, n_clusters=12) for pos in sets]
    exact = local_score_reference(x, sigma, data, 3, "els" if padding == "circular" else "bbels")
    for tol in (1e-12, 1e-2):
        stats = {}
        out = equivariant_local_score_posterior_mean(x, sigma, data, 3, padding=padding, prune_tol=tol,
                                                     indexes=indexes, stats=stats)
        assert (out - exact).abs().max() <= 2 * tol * data.abs().max() + 1e-12
        assert 0 < stats["computed_fraction"] <= 1
    if sigma == 1e-2:  # peaked softmaxes: many clusters are provably negligible (measured 0.45-0.63)
        assert stats["computed_fraction"] < 0.7
    if sigma >= 1:  # flat softmaxes: nothing can be skipped
        assert stats["computed_fraction"] == 1


def test_pruning_bound_holds_in_float32_at_tiny_sigma():
    data = tiny_images(8, (3, 6, 6), seed=29, dtype=torch.float32)
    x = near_data(data.double(), 2, 2e-3, seed=30).float()
    index = build_patch_index(data, 5, "circular", torch.arange(36), n_clusters=16)
    exact = equivariant_local_score_posterior_mean(x, 2e-3, data, 5)
    for tol in (1e-6, 1e-2):
        pruned = equivariant_local_score_posterior_mean(x, 2e-3, data, 5, prune_tol=tol, indexes=[index])
        assert (pruned - exact).abs().max() <= 2 * tol * data.abs().max() + 1e-5
