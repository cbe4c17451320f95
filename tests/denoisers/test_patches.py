"""LocalScoreDenoiser and PatchCompositeDenoiser (denoisers.patches): the estimators are their kernels,
patch sizes clipped to the image or given as schedules, class conditioning, the cached index of
pruned ELS, refusals, calibration, and the closed-form cases end to end."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.patches import (equivariant_local_score_posterior_mean, equivariant_position_sets,
                                                local_score_posterior_mean, patch_composite_posterior_mean)
from references import local_score_reference, near_data, patch_composite_reference, tiny_images

MODES = {"ls": dict(equivariant=False), "els": dict(equivariant=True, padding="circular"),
         "bbels": dict(equivariant=True, padding="zeros")}


def small_then_large(small, large):
    """A patch-size schedule: ``small`` below sigma = 1, ``large`` from there."""
    return lambda sigma: small if sigma < 1 else large


@pytest.mark.parametrize("mode", sorted(MODES))
def test_local_score_estimator_is_its_kernel(mode):
    data, x = tiny_images(5, (1, 6, 6), seed=1), tiny_images(3, (1, 6, 6), seed=2)
    sigma = torch.tensor([0.3, 2.0, 0.3], dtype=torch.float64)  # one level per image
    size = small_then_large(3, 5)
    out = ad.LocalScoreDenoiser(patch_size=size, chunk_size=2, **MODES[mode]).fit(data)(x, sigma)
    if MODES[mode]["equivariant"]:
        expect = equivariant_local_score_posterior_mean(x, sigma, data, size, padding=MODES[mode]["padding"],
                                                        chunk_size=2)
    else:
        expect = local_score_posterior_mean(x, sigma, data, size, chunk_size=2)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)


def test_patch_composite_estimator_is_its_kernel():
    data, x = tiny_images(8, (3, 5, 6), seed=3), tiny_images(3, (3, 5, 6), seed=4)
    sigma = torch.tensor([0.3, 2.0, 0.3], dtype=torch.float64)
    size = small_then_large(2, 4)
    out = ad.PatchCompositeDenoiser(patch_size=size, chunk_size=3).fit(data)(x, sigma)
    expect = patch_composite_posterior_mean(x, sigma, data, size, chunk_size=3)
    torch.testing.assert_close(out, expect, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_clipped_patches_match_brute_force_on_a_non_square_image(mode):
    data = tiny_images(3, (1, 5, 6), seed=31)
    x = near_data(data, 1, 0.3, seed=32)
    size = 11 if mode != "els" else 9  # 2 max(H, W) - 1; circular: 2 min(H, W) - 1
    out = ad.LocalScoreDenoiser(patch_size=21, **MODES[mode]).fit(data)(x, 0.3)
    torch.testing.assert_close(out, local_score_reference(x, 0.3, data, size, mode), rtol=1e-8, atol=1e-10)


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
    den = ad.LocalScoreDenoiser(patch_size=small_then_large(3, 5)).fit(data)
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
