"""LS / ELS / bbELS and PSPC against explicit-loop float64 references and exact identities."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.patch_index import build_patch_index, merge_duplicates
from analytic_denoisers.kernels.patches import equivariant_local_score_posterior_mean, equivariant_position_sets, window_sums
from references import empirical_reference, local_score_reference, patch_composite_reference, randn, tiny_images

SIGMAS = [1e-2, 0.1, 1.0, 10.0, 1e2]
MODES = {"ls": dict(equivariant=False), "els": dict(equivariant=True, padding="circular"),
         "bbels": dict(equivariant=True, padding="zeros")}


def near_data(data, n, sigma, seed):
    """Queries near training images (so that small sigmas still mix several patches) and far."""
    shape = data.shape[1:]
    x = data[:n] + 0.3 * sigma * randn(n, *shape, seed=seed)
    return torch.cat([x, tiny_images(1, shape, seed=seed + 1)])


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape, size", [((1, 6, 6), 3), ((3, 5, 6), 3), ((1, 6, 6), 5)])
def test_local_score_matches_brute_force(mode, sigma, shape, size):
    data = tiny_images(5, shape, seed=1)
    x = near_data(data, 1, sigma, seed=2)
    out = ad.LocalScoreDenoiser(patch_size=size, **MODES[mode]).fit(data)(x, sigma)
    ref = local_score_reference(x, sigma, data, size, mode)
    torch.testing.assert_close(out, ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape, size", [((1, 6, 6), 3), ((3, 5, 6), 2), ((1, 6, 6), 4)])
def test_patch_composite_matches_brute_force(sigma, shape, size):
    data = tiny_images(8, shape, seed=3)
    x = near_data(data, 2, sigma, seed=4)
    out = ad.PatchCompositeDenoiser(patch_size=size).fit(data)(x, sigma)
    torch.testing.assert_close(out, patch_composite_reference(x, sigma, data, size), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sigma", [1e-2, 0.3, 10.0])
def test_whole_image_patches_are_the_empirical_denoiser(sigma):
    data = tiny_images(9, (2, 5, 6), seed=5)
    x = near_data(data, 3, sigma, seed=6)
    ref = empirical_reference(x, sigma, data).reshape(x.shape)
    ls = ad.LocalScoreDenoiser(patch_size=11).fit(data)(x, sigma)  # 2 max(H, W) - 1
    torch.testing.assert_close(ls, ref, rtol=1e-9, atol=1e-10)
    pspc = ad.PatchCompositeDenoiser(patch_size=5).fit(tiny_images(9, (2, 5, 5), seed=5))
    x5 = x[..., :5]
    torch.testing.assert_close(pspc(x5, sigma), empirical_reference(x5, sigma, pspc.data_).reshape(x5.shape),
                               rtol=1e-9, atol=1e-10)


def test_els_is_exactly_equivariant_to_circular_shifts():
    data = tiny_images(6, (2, 6, 5), seed=7)
    den = ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="circular").fit(data)
    x = near_data(data, 2, 0.3, seed=8)
    for shift in [(1, 0), (0, 2), (3, 4)]:
        shifted = den(torch.roll(x, shift, dims=(2, 3)), 0.3)
        torch.testing.assert_close(shifted, torch.roll(den(x, 0.3), shift, dims=(2, 3)), rtol=1e-10, atol=1e-12)
    # LS and bbELS are not: their borders break the symmetry
    for params in (MODES["ls"], MODES["bbels"]):
        den = ad.LocalScoreDenoiser(patch_size=3, **params).fit(data)
        assert not torch.allclose(den(torch.roll(x, (1, 0), dims=(2, 3)), 0.3), torch.roll(den(x, 0.3), (1, 0), dims=(2, 3)))


def test_one_pixel_patches_and_one_image_sets():
    data = tiny_images(1, (3, 4, 4), seed=9)
    x = tiny_images(2, (3, 4, 4), seed=10)
    for den in (ad.LocalScoreDenoiser(patch_size=3), ad.PatchCompositeDenoiser(patch_size=2)):
        torch.testing.assert_close(den.fit(data)(x, 0.5), data.expand_as(x))  # one image: itself
    # ELS with one 1x1 patch per pixel value: a softmax over all pixel values of the set
    data = tiny_images(3, (1, 3, 3), seed=11)
    out = ad.LocalScoreDenoiser(patch_size=1, equivariant=True, padding="circular").fit(data)(x[:1, :1, :3, :3], 0.2)
    values = data.reshape(-1)
    for p, v in enumerate(x[0, 0, :3, :3].reshape(-1)):
        w = torch.softmax(-(v - values) ** 2 / (2 * 0.2**2), 0)
        torch.testing.assert_close(out.reshape(-1)[p], (w * values).sum())


def test_limits_in_sigma():
    data = tiny_images(7, (1, 6, 6), seed=12)
    x = tiny_images(3, (1, 6, 6), seed=13)
    for params in MODES.values():
        den = ad.LocalScoreDenoiser(patch_size=3, **params).fit(data)
        # sigma -> infinity: every weight equal, the mean of the candidate centre pixels
        limit = data.mean(0).reshape(-1)  # LS: per pixel over the images
        if params["equivariant"]:  # ELS / bbELS: over the images and the locations of each set
            for pos in equivariant_position_sets(6, 6, 3, params["padding"]):
                limit[pos] = limit[pos].mean()
        torch.testing.assert_close(den(x, 1e6), limit.reshape(1, 1, 6, 6).expand_as(x), rtol=0, atol=1e-6)
        # sigma -> 0: the output is a training pixel value
        small = den(x, 1e-4).reshape(-1)
        assert all((data - v).abs().min() < 1e-9 for v in small)
    pspc = ad.PatchCompositeDenoiser(patch_size=3).fit(data)
    torch.testing.assert_close(pspc(x, 1e6), data.mean(0).expand_as(x), rtol=0, atol=1e-6)


def test_class_conditional_uses_only_that_class():
    data = tiny_images(9, (1, 5, 5), seed=14)
    y = torch.tensor([0, 1, 2] * 3)
    x, labels = tiny_images(3, (1, 5, 5), seed=15), torch.tensor([2, 0, 1])
    for est, ref in ((ad.LocalScoreDenoiser(patch_size=3), lambda xs, d: local_score_reference(xs, 0.4, d, 3, "ls")),
                     (ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="circular"),
                      lambda xs, d: local_score_reference(xs, 0.4, d, 3, "els")),
                     (ad.PatchCompositeDenoiser(patch_size=2), lambda xs, d: patch_composite_reference(xs, 0.4, d, 2))):
        out = est.fit(data, y)(x, 0.4, y=labels)
        for n, label in enumerate(labels):
            torch.testing.assert_close(out[n:n + 1], ref(x[n:n + 1], data[y == label]), rtol=1e-9, atol=1e-10)
        # a batch without class 1
        torch.testing.assert_close(est(x[:2], 0.4, y=labels[:2]), out[:2], rtol=1e-12, atol=1e-12)


def test_patch_size_schedule_and_validation():
    data, x = tiny_images(6, (1, 6, 6), seed=16), tiny_images(2, (1, 6, 6), seed=17)
    den = ad.LocalScoreDenoiser(patch_size=lambda s: 3 if s < 1 else 5).fit(data)
    sigma = torch.tensor([0.5, 2.0], dtype=torch.float64)
    out = den(x, sigma)
    torch.testing.assert_close(out[:1], ad.LocalScoreDenoiser(patch_size=3).fit(data)(x[:1], 0.5))
    torch.testing.assert_close(out[1:], ad.LocalScoreDenoiser(patch_size=5).fit(data)(x[1:], 2.0))
    assert ad.LocalScoreDenoiser(patch_size=99).fit(data).patch_size_at(1.0) == 11
    assert ad.LocalScoreDenoiser(patch_size=99, equivariant=True, padding="circular").fit(data).patch_size_at(1.0) == 11
    assert ad.PatchCompositeDenoiser(patch_size=99).fit(data).patch_size_at(1.0) == 6
    for bad in (4, 0, -3, 2.5, "5"):  # refused at fit
        with pytest.raises(ValueError, match="patch_size must be a positive odd integer"):
            ad.LocalScoreDenoiser(patch_size=bad).fit(data)
    for bad in (4, 0, 2.5):  # a schedule's value: refused where read
        with pytest.raises(ValueError, match="patch_size at sigma = 1 must be a positive odd integer"):
            ad.LocalScoreDenoiser(patch_size=lambda sigma: bad).fit(data)(x, 1.0)
    with pytest.raises(ValueError, match="positive integer"):
        ad.PatchCompositeDenoiser(patch_size=0).fit(data)(x, 1.0)
    with pytest.raises(ValueError, match="padding"):
        ad.LocalScoreDenoiser(padding="reflect").fit(data)


def test_window_sums_and_position_sets():
    t = randn(2, 3, 5, 6, seed=18)
    sums = window_sums(t, 3, 1)
    padded = torch.nn.functional.pad(t, (1, 1, 1, 1))
    loops = torch.stack([torch.stack([padded[..., r:r + 3, c:c + 3].sum((-1, -2)) for c in range(6)], -1)
                         for r in range(5)], -2)
    torch.testing.assert_close(sums, loops)
    circ = window_sums(t, 3, 1, "circular")
    torch.testing.assert_close(circ[..., 0, 0], t[..., [4, 0, 1], :][..., [5, 0, 1]].sum((-1, -2)))
    # bbELS on 6x6 with P = 3: interior 4x4, four border rows/columns of 4, four corners
    sets = equivariant_position_sets(6, 6, 3, "zeros")
    assert sorted(len(s) for s in sets) == [1] * 4 + [4] * 4 + [16]
    assert sorted(torch.cat(sets).tolist()) == list(range(36))
    assert [len(s) for s in equivariant_position_sets(6, 6, 3, "circular")] == [36]


def test_patch_size_calibration_and_table_round_trip(tmp_path):
    data, held_out = tiny_images(8, (1, 6, 6), seed=19), tiny_images(3, (1, 6, 6), seed=20)
    target = ad.LocalScoreDenoiser(patch_size=3).fit(data)
    den = ad.LocalScoreDenoiser(patch_size=1).fit(data)
    result = ad.scales.calibrate(den, "patch_size", [1, 3, 5], target, held_out, [0.1, 1.0], progress=False)
    assert result.schedule(0.1) == 3 and result.schedule(1.0) == 3 and den.patch_size == 1
    den.set_params(patch_size=result.schedule).save(tmp_path / "ls.h5")
    back = ad.load(tmp_path / "ls.h5")
    assert back.patch_size == result.schedule
    torch.testing.assert_close(back(held_out, 0.3), target(held_out, 0.3))


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


def test_pruned_denoiser_matches_exact_and_validates():
    data = tiny_images(120, (1, 6, 6), seed=23)  # 4,320 patches: several clusters by default
    x = near_data(data, 2, 0.05, seed=24)
    exact = ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="circular").fit(data)
    pruned = ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="circular", prune_tol=1e-10).fit(data)
    torch.testing.assert_close(pruned(x, 0.05), exact(x, 0.05), rtol=0, atol=1e-9)
    indexes = [v for v in pruned._cache.values() if isinstance(v, list)]
    assert len(indexes) == 1 and len(indexes[0][0].centroids) > 1
    # changing the padding after a call must not reuse the circular index for bbELS
    pruned.set_params(padding="zeros")
    bbels = ad.LocalScoreDenoiser(patch_size=3, equivariant=True, padding="zeros").fit(data)
    torch.testing.assert_close(pruned(x, 0.05), bbels(x, 0.05), rtol=0, atol=1e-9)
    for bad in (dict(prune_tol=0.0, equivariant=True), dict(prune_tol=2.0, equivariant=True), dict(prune_tol=1e-3)):
        with pytest.raises(ValueError, match="prune_tol"):
            ad.LocalScoreDenoiser(**bad).fit(data)


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


def test_pruning_bound_holds_in_float32_at_tiny_sigma():
    data = tiny_images(8, (3, 6, 6), seed=29, dtype=torch.float32)
    x = near_data(data.double(), 2, 2e-3, seed=30).float()
    index = build_patch_index(data, 5, "circular", torch.arange(36), n_clusters=16)
    exact = equivariant_local_score_posterior_mean(x, 2e-3, data, 5)
    for tol in (1e-6, 1e-2):
        pruned = equivariant_local_score_posterior_mean(x, 2e-3, data, 5, prune_tol=tol, indexes=[index])
        assert (pruned - exact).abs().max() <= 2 * tol * data.abs().max() + 1e-5


@pytest.mark.parametrize("mode", sorted(MODES))
def test_clipped_patches_match_brute_force_on_a_non_square_image(mode):
    data = tiny_images(3, (1, 5, 6), seed=31)
    x = near_data(data, 1, 0.3, seed=32)
    size = 11 if mode != "els" else 9  # 2 max(H, W) - 1; circular: 2 min(H, W) - 1
    out = ad.LocalScoreDenoiser(patch_size=21, **MODES[mode]).fit(data)(x, 0.3)
    torch.testing.assert_close(out, local_score_reference(x, 0.3, data, size, mode), rtol=1e-8, atol=1e-10)


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


def test_float32_els_switches_to_float64_products_at_small_sigma():
    # a query halfway between two images: every pixel is a near-tie that float32 logits
    # q.k / sigma^2 would break (measured: 1.2e-2 off at sigma = 2e-3 with float32 products)
    data = tiny_images(2, (1, 6, 6), seed=33).float()
    x = data.mean(0, keepdim=True)
    for sigma in (2e-3, 2e-2, 1.0):
        exact = equivariant_local_score_posterior_mean(x.double(), sigma, data.double(), 3)
        out = equivariant_local_score_posterior_mean(x, sigma, data, 3)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-6)
        index = build_patch_index(data, 3, "circular", torch.arange(36), n_clusters=3)
        pruned = equivariant_local_score_posterior_mean(x, sigma, data, 3, prune_tol=1e-9, indexes=[index])
        torch.testing.assert_close(pruned.double(), exact, rtol=0, atol=1e-6)
