"""PCALocalityDenoiser (denoisers.locality): the estimator is its kernel with the masks of its fitted
Gaussian, threshold schedules and refusals, and the closed-form cases end to end."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.kernels.locality import locality_masks, pca_locality_posterior_mean
from analytic_denoisers.kernels.moments import moments
from analytic_denoisers.kernels.wiener import eigenbasis
from references import pca_locality_reference, tiny_images


@pytest.mark.parametrize("threshold", [0.05, 0.3])
def test_estimator_is_the_kernel_with_the_masks_of_its_gaussian(threshold):
    data, x = tiny_images(14, (1, 5, 5), seed=1), tiny_images(3, (1, 5, 5), seed=2)
    den = ad.PCALocalityDenoiser(threshold=threshold, chunk_size=4).fit(data)
    basis = eigenbasis(moments(data))

    def masks(sigma):
        return locality_masks(sigma, basis.eigvals, basis.eigvecs, threshold)

    for sigma in (1e-2, 1.0, 1e2):
        assert torch.equal(den.masks(sigma), masks(sigma))
    sigma = torch.tensor([0.1, 1.0, 0.1], dtype=torch.float64)  # one level per image
    expect = pca_locality_posterior_mean(x, sigma, data.reshape(14, -1), masks, chunk_size=4)
    torch.testing.assert_close(den(x, sigma), expect, rtol=0, atol=1e-12)


def test_an_all_ones_mask_is_the_empirical_denoiser():
    data, x = tiny_images(10, seed=3), tiny_images(4, seed=4)
    ones = torch.ones(data[0].numel(), data[0].numel(), dtype=torch.bool)
    out = pca_locality_posterior_mean(x, 0.7, data.reshape(10, -1), ones)
    torch.testing.assert_close(out, ad.EmpiricalOptimalDenoiser().fit(data)(x, 0.7))


@pytest.mark.parametrize("rule", ["published", "positive-diagonal"])
def test_threshold_zero_and_temperature_and_rule_reach_the_kernel(rule):
    data, x = tiny_images(12, (1, 3, 3), seed=5), tiny_images(2, (1, 3, 3), seed=6)
    den = ad.PCALocalityDenoiser(threshold=0.0, temperature=2.5, mask_rule=rule).fit(data)
    assert den.masks(0.5).dtype == torch.float64  # real-valued weights
    ref, mask = pca_locality_reference(x, 0.5, data, 0.0, rule, temperature=2.5)
    torch.testing.assert_close(den.masks(0.5), mask, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(den(x, 0.5).reshape(2, -1), ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("statistics", ["class", "global"])
def test_class_conditional_uses_that_class_and_its_statistics(statistics):
    data, x = tiny_images(18, (1, 3, 3), seed=9), tiny_images(3, (1, 3, 3), seed=10)
    y = torch.tensor([0, 1, 2] * 6)
    den = ad.PCALocalityDenoiser(threshold=0.1, class_statistics=statistics).fit(data, y)
    labels = torch.tensor([2, 0, 2])
    out = den(x, 0.6, y=labels)
    for n, label in enumerate(labels.tolist()):
        members = data[y == label]
        if statistics == "class":  # the class's own Gaussian gives the masks
            ref, _ = pca_locality_reference(x[n:n + 1], 0.6, members, 0.1)
        else:  # the whole set's masks, the class's images
            ref = pca_locality_posterior_mean(x[n:n + 1], 0.6, members.reshape(6, -1), den.masks(0.6))
        torch.testing.assert_close(out[n].reshape(1, -1), ref.reshape(1, -1), rtol=1e-9, atol=1e-9)
    assert (den.class_eigvals_ is None) == (statistics == "global")
    with pytest.raises(ValueError, match="pass y"):
        den(x, 0.6)


def test_threshold_schedule_is_a_function_of_sigma():
    data, x = tiny_images(12, seed=7), tiny_images(3, seed=8)
    schedule = ad.PCALocalityDenoiser(threshold=lambda s: 0.0 if s > 1 else 0.3).fit(data)
    for sigma, fixed in ((0.5, 0.3), (5.0, 0.0)):
        torch.testing.assert_close(schedule(x, sigma), ad.PCALocalityDenoiser(threshold=fixed).fit(data)(x, sigma))
    sigma = torch.tensor([0.5, 5.0, 0.5], dtype=torch.float64)  # per-image levels, grouped
    expect = torch.cat([schedule(x[i:i + 1], float(sigma[i])) for i in range(3)])
    torch.testing.assert_close(schedule(x, sigma), expect)


def test_invalid_threshold_is_rejected():
    with pytest.raises(ValueError, match="threshold must be a number in"):
        ad.PCALocalityDenoiser(threshold=1.5).fit(tiny_images(5))  # refused at fit
    den = ad.PCALocalityDenoiser(threshold=lambda sigma: 1.5).fit(tiny_images(5))
    with pytest.raises(ValueError, match="threshold"):  # a schedule's value: refused where read
        den(tiny_images(2), 1.0)


def test_a_file_saved_before_the_published_rule_loads_with_the_rule_it_was_made_with(tmp_path):
    """Files of PCALocalityDenoiser written before mask_rule and class conditioning existed hold
    neither: they load with the positive-diagonal rule their masks were made with, unlabelled."""
    import h5py
    import json

    data, x = tiny_images(12, (1, 4, 4), seed=40), tiny_images(2, (1, 4, 4), seed=41)
    den = ad.PCALocalityDenoiser(threshold=0.05, mask_rule="positive-diagonal").fit(data)
    path = den.save(tmp_path / "old.h5")
    with h5py.File(path, "r+") as f:  # what the earlier package wrote
        params = json.loads(f.attrs["params"])
        f.attrs["params"] = json.dumps({k: params[k] for k in ("threshold", "rank", "chunk_size")})
        for name in ("class_eigvals_", "class_eigvecs_", "labels_", "classes_", "class_offsets_"):
            if name in f["state"]:
                del f["state"][name]
        scalars = json.loads(f["state"].attrs["scalars"])
        f["state"].attrs["scalars"] = json.dumps({k: v for k, v in scalars.items() if k not in (
            "labels_", "classes_", "class_offsets_", "class_eigvals_", "class_eigvecs_")})
    back = ad.load(path)
    assert back.mask_rule == "positive-diagonal" and back.classes_ is None
    assert torch.equal(back(x, 0.5), den(x, 0.5))


def test_set_params_after_fit_is_honoured_or_refused():
    data, x = tiny_images(18, (1, 3, 3), seed=42), tiny_images(2, (1, 3, 3), seed=43)
    y = torch.tensor([0, 1, 2] * 6)
    per_class = ad.PCALocalityDenoiser(threshold=0.1).fit(data, y)
    as_global = ad.PCALocalityDenoiser(threshold=0.1, class_statistics="global").fit(data, y)
    labels = torch.tensor([0, 2])
    torch.testing.assert_close(per_class.set_params(class_statistics="global")(x, 0.6, y=labels),
                               as_global(x, 0.6, y=labels))
    with pytest.raises(ValueError, match="fit"):
        as_global.set_params(class_statistics="class")(x, 0.6, y=labels)
    gold = ad.GoldDiffDenoiser(threshold=0.1, k_min=3, k_max=6, proxy_resolution=1).fit(data)
    gold(x, 0.5)
    fresh = ad.GoldDiffDenoiser(threshold=0.1, k_min=3, k_max=6, proxy_resolution=3).fit(data)
    torch.testing.assert_close(gold.set_params(proxy_resolution=3)(x, 0.5), fresh(x, 0.5))  # no stale proxies
