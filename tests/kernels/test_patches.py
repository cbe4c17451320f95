"""The patch kernels (kernels.patches): LS / ELS / bbELS and PSPC against explicit-loop float64
references, exact identities (whole-image patches, circular shifts), window sums, position sets, and
float32 at small sigma."""

from functools import partial

import pytest
import torch

from analytic_denoisers.kernels.patch_index import build_patch_index
from analytic_denoisers.kernels import windows
from analytic_denoisers.kernels.patches import (els_method, equivariant_local_score_posterior_mean,
                                                equivariant_position_sets, local_score_posterior_mean,
                                                patch_composite_posterior_mean)
from analytic_denoisers.kernels.windows import box_adds, box_sums, clipped_window_sums, cyclic_box_sums
from references import (SIGMAS, empirical_reference, local_score_reference, near_data, patch_composite_reference,
                        randn, tiny_images)

# the local score machines: mode of local_score_reference -> kernel(x, sigma, data, patch_size)
KERNELS = {"ls": local_score_posterior_mean,
           "els": partial(equivariant_local_score_posterior_mean, padding="circular"),
           "bbels": partial(equivariant_local_score_posterior_mean, padding="zeros")}
PATHS = {"ls": [{}], "els": [dict(method="shifts"), dict(method="products")],
         "bbels": [dict(method="shifts"), dict(method="products")]}


def recorded_refinements(monkeypatch):
    """A list that receives ``(dtype of the distances, answer)`` of every ``WindowDistances.refine`` call."""
    calls, refine = [], windows.WindowDistances.refine

    def recording(self, candidates, distances, *args, **kwargs):
        calls.append((distances.dtype, refine(self, candidates, distances, *args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(windows.WindowDistances, "refine", recording)
    return calls


@pytest.mark.parametrize("mode", sorted(KERNELS))
@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape, size", [((1, 6, 6), 3), ((3, 5, 6), 3), ((1, 6, 6), 5), ((2, 5, 7), 9)])
def test_local_score_matches_brute_force(mode, sigma, shape, size):
    data = tiny_images(5, shape, seed=1)
    x = near_data(data, 1, sigma, seed=2)
    ref = local_score_reference(x, sigma, data, size, mode)
    for path in PATHS[mode]:
        torch.testing.assert_close(KERNELS[mode](x, sigma, data, size, **path), ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("mode, path", [("ls", {}), ("ls", dict(padding="circular")), ("els", dict(method="shifts")),
                                        ("bbels", dict(method="shifts")), ("pspc", {})])
def test_window_kernels_do_not_depend_on_chunks_or_query_blocks(mode, path, monkeypatch):
    kernel = patch_composite_posterior_mean if mode == "pspc" else KERNELS[mode]
    data = tiny_images(7, (2, 6, 5), seed=40)
    x = near_data(data, 4, 0.3, seed=41)
    whole = kernel(x, 0.3, data, 3, **path)
    for chunk in (1, 2, 5):
        torch.testing.assert_close(kernel(x, 0.3, data, 3, chunk_size=chunk, **path), whole, rtol=1e-12, atol=1e-14)
    monkeypatch.setattr(windows, "BLOCK_ELEMENTS", 1)  # one query and MIN_CANDIDATES per block
    torch.testing.assert_close(kernel(x, 0.3, data, 3, **path), whole, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode, size", [("ls", 3), ("ls", 9), ("ls-circular", 3), ("els", 3), ("bbels", 3),
                                        ("pspc", 3), ("pspc", 4)])
def test_window_kernels_have_exact_gradients(mode, size):
    # size 9 (LS) and 4 (PSPC's second pass) on 5 x 4 images: windows clipped to the image
    data = tiny_images(3, (1, 5, 4), seed=42)
    x = near_data(data, 1, 0.5, seed=43).requires_grad_()
    kernel = {"ls": local_score_posterior_mean,
              "ls-circular": partial(local_score_posterior_mean, padding="circular"),
              "els": partial(KERNELS["els"], method="shifts"), "bbels": partial(KERNELS["bbels"], method="shifts"),
              "pspc": patch_composite_posterior_mean}[mode]
    assert torch.autograd.gradcheck(lambda x: kernel(x, 0.5, data, size), (x,))


def test_els_method_auto_follows_the_cost_model():
    # ELS: matrix products of short patches, shifts for long ones; bbELS at P = 27 on 28 x 28
    # has 9 shifts against 784 position sets
    assert els_method(2, 100, (1, 28, 28), 3, "circular") == "products"
    assert els_method(2, 100, (1, 28, 28), 27, "circular") == "shifts"
    assert els_method(2, 100, (1, 28, 28), 27, "zeros") == "shifts"
    with pytest.raises(ValueError, match="method"):
        KERNELS["els"](torch.zeros(1, 1, 4, 4), 1.0, torch.zeros(2, 1, 4, 4), 3, method="fft")


def test_float32_window_kernels_are_made_exact_where_rounding_could_matter(monkeypatch):
    # a query halfway between two images: every pixel a near-tie, which float32 distances
    # (relative error kappa u) would break at small sigma
    data = tiny_images(2, (1, 6, 6), seed=33).float()
    x = data.mean(0, keepdim=True)
    kernels = (local_score_posterior_mean, partial(KERNELS["els"], method="shifts"),
               partial(KERNELS["bbels"], method="shifts"), patch_composite_posterior_mean)
    calls = recorded_refinements(monkeypatch)
    for kernel in kernels:
        for sigma in (2e-3, 2e-2, 1.0):
            calls.clear()
            out = kernel(x, sigma, data, 3)
            assert out.dtype == torch.float32
            torch.testing.assert_close(out.double(), kernel(x.double(), sigma, data.double(), 3), rtol=0, atol=1e-6)
            assert any(answer is not None for _, answer in calls) == (sigma < 1)  # only where the bound asks
    # without the exact pairs, float32 distances are not enough there (so the test above can fail)
    monkeypatch.setattr(windows.WindowDistances, "refine", lambda *args: None)
    for kernel in kernels:
        exact = kernel(x.double(), 2e-3, data.double(), 3)
        assert (kernel(x, 2e-3, data, 3).double() - exact).abs().max() > 1e-4
    # the rule: exact logits where kappa u (|l_max| + 30) > 1e-4
    distances = windows.WindowDistances(x, 7, 3, "zeros")
    assert distances.kappa == 5 + 1 + 2 * 4
    bound = torch.tensor([-10.0, -50.0, -200.0, -torch.inf], dtype=torch.float64)
    assert distances.imprecise(bound).tolist() == [False, False, True, False]


@pytest.mark.parametrize("padding, size, pad", [("zeros", 3, 1), ("zeros", 9, 4), ("circular", 5, 2),
                                                ("circular", 13, 6), ("zeros", 4, 0)])
def test_exact_window_distances_are_the_float64_window_sums(padding, size, pad):
    # every pair (query, pixel, candidate), against the float64 distances of the fast path
    data = tiny_images(5, (2, 6, 5), seed=36).float()
    x = near_data(data, 2, 0.5, seed=37).float()
    distances = windows.WindowDistances(x, size, pad, padding)
    candidates = windows.candidates_last(data)
    full = distances(candidates, torch.float64)
    pairs = torch.cartesian_prod(*(torch.arange(k) for k in full.shape))
    exact = distances.exact(candidates, pairs)
    assert exact.dtype == torch.float64
    torch.testing.assert_close(exact, full[tuple(pairs.T)], rtol=1e-12, atol=1e-12)


def test_refinement_keeps_every_candidate_that_carries_weight():
    # far from the data at small sigma every pixel needs exact logits; the pairs kept are those
    # within 31 + 3 kappa u |l_max| of the maximum (float32), the rest carry less than e^-30
    data = tiny_images(400, (1, 6, 6), seed=38).float()
    x = tiny_images(1, (1, 6, 6), seed=39).float()
    scale = -0.5 / 0.01**2
    distances = windows.WindowDistances(x, 3, 1, "zeros")
    candidates = windows.candidates_last(data)
    d32 = distances(candidates, torch.float32)
    exact = scale * distances(candidates, torch.float64)
    new_max = exact.amax(-1, keepdim=True)
    refined = distances.refine(candidates, d32, new_max, scale)
    assert refined.pixels.equal(distances.imprecise(new_max).squeeze(-1).nonzero()) and len(refined.pixels) == 36
    kept = torch.zeros_like(d32, dtype=torch.bool)
    kept[tuple(refined.pairs.T)] = True
    assert kept[exact >= new_max - 30].all() and kept.sum() < kept.numel() / 4  # what matters, not every pair
    assert (exact[~kept] < new_max.expand_as(exact)[~kept] - 30).all()
    torch.testing.assert_close(refined.logits, exact[kept], rtol=1e-12, atol=0)
    assert distances.refine(candidates, d32.double(), new_max, scale) is None  # float64: nothing to refine


@pytest.mark.parametrize("sigma", SIGMAS)
@pytest.mark.parametrize("shape, size", [((1, 6, 6), 3), ((3, 5, 6), 2), ((1, 6, 6), 4)])
def test_patch_composite_matches_brute_force(sigma, shape, size):
    data = tiny_images(8, shape, seed=3)
    x = near_data(data, 2, sigma, seed=4)
    out = patch_composite_posterior_mean(x, sigma, data, size)
    torch.testing.assert_close(out, patch_composite_reference(x, sigma, data, size), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("sigma", [1e-2, 0.3, 10.0])
def test_whole_image_patches_are_the_empirical_denoiser(sigma):
    data = tiny_images(9, (2, 5, 6), seed=5)
    x = near_data(data, 3, sigma, seed=6)
    ref = empirical_reference(x, sigma, data).reshape(x.shape)
    ls = local_score_posterior_mean(x, sigma, data, 11)  # 2 max(H, W) - 1
    torch.testing.assert_close(ls, ref, rtol=1e-9, atol=1e-10)
    square, x5 = tiny_images(9, (2, 5, 5), seed=5), x[..., :5]
    torch.testing.assert_close(patch_composite_posterior_mean(x5, sigma, square, 5),
                               empirical_reference(x5, sigma, square).reshape(x5.shape), rtol=1e-9, atol=1e-10)


def test_els_is_exactly_equivariant_to_circular_shifts():
    data = tiny_images(6, (2, 6, 5), seed=7)
    x = near_data(data, 2, 0.3, seed=8)

    def shifted_pair(kernel, shift):
        """The output for the shifted input, and the shifted output."""
        moved = torch.roll(x, shift, dims=(2, 3))
        return kernel(moved, 0.3, data, 3), torch.roll(kernel(x, 0.3, data, 3), shift, dims=(2, 3))

    for shift in [(1, 0), (0, 2), (3, 4)]:
        torch.testing.assert_close(*shifted_pair(KERNELS["els"], shift), rtol=1e-10, atol=1e-12)
    # LS and bbELS are not: their borders break the symmetry
    for mode in ("ls", "bbels"):
        assert not torch.allclose(*shifted_pair(KERNELS[mode], (1, 0)))


@pytest.mark.parametrize("size", [1, 2, 3, 5, 6, 7, 11])
def test_box_sums_are_window_sums(size):
    t = randn(2, 13, 12, 3, seed=18)
    loops = torch.stack([torch.stack([t[:, r:r + size, c:c + size].sum((1, 2)) for c in range(12 - size + 1)], 1)
                         for r in range(13 - size + 1)], 1)
    torch.testing.assert_close(box_sums(t, size, (1, 2)), loops)
    assert box_adds(7) == 4 and box_adds(8) == 3 and box_adds(55) == 9
    # cyclic: out[j] = sum_{k < size} t[(j + start + k) mod n], also for windows wider than the axis
    for start in (0, -(size // 2), 4):
        rows = [[(j + start + k) % 13 for k in range(size)] for j in range(13)]
        cols = [[(j + start + k) % 12 for k in range(size)] for j in range(12)]
        cyclic = torch.stack([torch.stack([t[:, r][:, :, c].sum((1, 2)) for c in cols], 1) for r in rows], 1)
        torch.testing.assert_close(cyclic_box_sums(t, size, (1, 2), start), cyclic)
        wide = cyclic_box_sums(t, size + 13, (1,), start)
        torch.testing.assert_close(wide, cyclic_box_sums(t, size, (1,), start) + t.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="larger than the axis"):
        box_sums(t, 14, (1,))
    # zero padding: windows clipped to the axis, from prefix sums, equal the padded sums
    for pad in (size // 2, size - 1):
        padded = box_sums(torch.nn.functional.pad(t, (0, 0, pad, pad, pad, pad)), size, (1, 2))
        torch.testing.assert_close(clipped_window_sums(t, size, pad, (1, 2)), padded)


def test_position_sets():
    # bbELS on 6x6 with P = 3: interior 4x4, four border rows/columns of 4, four corners
    sets = equivariant_position_sets(6, 6, 3, "zeros")
    assert sorted(len(s) for s in sets) == [1] * 4 + [4] * 4 + [16]
    assert sorted(torch.cat(sets).tolist()) == list(range(36))
    assert [len(s) for s in equivariant_position_sets(6, 6, 3, "circular")] == [36]


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


def test_float32_window_kernels_stay_finite_and_exact_far_from_the_data(monkeypatch):
    # |l_max| ~ 1e9 at sigma = 2e-3: the float32 maximum can be below the exact logits by many
    # units (kappa u |l_max|), so the exact ones raise it (the weights would overflow otherwise)
    # (2,000 images: few kept pairs against the block, refined pair by pair)
    data = tiny_images(2000, (1, 6, 6), seed=44).float()
    x = tiny_images(2, (1, 6, 6), seed=45).float() + 40
    calls = recorded_refinements(monkeypatch)
    for kernel in (local_score_posterior_mean, partial(KERNELS["bbels"], method="shifts"), patch_composite_posterior_mean):
        calls.clear()
        out = kernel(x, 2e-3, data, 3)
        assert torch.isfinite(out).all() and any(isinstance(answer, windows.Refinement) for _, answer in calls)
        torch.testing.assert_close(out.double(), kernel(x.double(), 2e-3, data.double(), 3), rtol=0, atol=1e-6)


def test_float32_window_kernels_take_a_block_in_float64_when_refining_it_costs_more(monkeypatch):
    # 10 near copies of one image and a far query: at every pixel, every candidate is near the
    # maximum, and P^2 values per pair would cost more than the block: the block goes float64, and
    # so does the next one, which finds float32 enough again (30 far images after the copies)
    base = tiny_images(1, (1, 6, 6), seed=46)
    copies = base + 1e-4 * randn(10, 1, 6, 6, seed=47)
    data = torch.cat([copies, tiny_images(30, (1, 6, 6), seed=48) - 3]).float()
    x = (base + 3).float()
    calls = recorded_refinements(monkeypatch)
    for kernel in (local_score_posterior_mean, patch_composite_posterior_mean):
        calls.clear()
        out = kernel(x, 0.05, data, 5, chunk_size=10)
        assert calls[:3] == [(torch.float32, windows.WHOLE_BLOCK), (torch.float64, None), (torch.float32, None)]
        torch.testing.assert_close(out.double(), kernel(x.double(), 0.05, data.double(), 5), rtol=0, atol=1e-6)

def test_float64_blocks_ask_again_at_doubling_intervals(monkeypatch):
    # every block of 5 near copies needs float64 whole: it asks again after 0, 1, 2, 4 ... blocks
    base = tiny_images(1, (1, 6, 6), seed=46)
    data = (base + 1e-4 * randn(40, 1, 6, 6, seed=47)).float()
    calls = recorded_refinements(monkeypatch)
    out = local_score_posterior_mean((base + 3).float(), 0.05, data, 5, chunk_size=5)  # 8 blocks
    # blocks 1, 2, 4 and 7 ask (1 in float32); 3, 5, 6 and 8 are float64 without asking
    assert calls == [(torch.float32, windows.WHOLE_BLOCK)] + [(torch.float64, windows.WHOLE_BLOCK)] * 3
    torch.testing.assert_close(out.double(), local_score_posterior_mean((base + 3), 0.05, data.double(), 5),
                               rtol=0, atol=1e-6)
