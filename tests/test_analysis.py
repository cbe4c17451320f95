"""Theory analyses on cases with known answers."""

import json
import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.analysis import chromatography, locality_maps, teleport_sample, teleportation, trajectory
from analytic_denoisers.cli import main
from analytic_denoisers.kernels.wiener import wiener_matrix
from references import TINY_UNET, gaussian_problem, tiny_images


@pytest.fixture(scope="module")
def gaussian():
    X, _, _ = gaussian_problem((1, 3, 3), n=500)
    return ad.GaussianDenoiser().fit(X)


def test_no_teleport_is_a_plain_run(gaussian):
    noise = torch.randn(3, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = ad.schedules.karras(8, 0.01, 50.0)
    final, calls = teleport_sample(gaussian, gaussian, noise, sigmas, 0)
    assert torch.equal(final, ad.sample(gaussian, noise, sigmas)) and calls == 2 * 8 - 1


def test_teleporting_with_the_gaussian_itself_changes_nothing(gaussian):
    # every hybrid run lands on the exact closed-form end point, up to Heun's error, which
    # shrinks at second order with the number of steps
    noise = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    worst = []
    for n in (100, 400):
        sigmas = ad.schedules.karras(n, 0.002, 80.0)
        exact = gaussian.trajectory(noise * 80.0, sigmas)[-1]
        result = teleportation(gaussian, gaussian, noise, sigmas, [n // 4, n // 2, n - 1])
        assert [r["skip"] for r in result["by_skip"]] == [0, n // 4, n // 2, n - 1]
        assert all(r["calls_saved"] == 2 * r["skip"] for r in result["by_skip"])
        worst.append(max(float((f - exact).abs().max()) for f in result["_samples"].values()))
    assert worst[1] < 2e-4 and worst[0] / worst[1] > 8


def test_bad_skip_raises(gaussian):
    noise = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    for bad in (-1, 9, 1.5):
        with pytest.raises(ValueError, match="skip must be an int"):
            teleport_sample(gaussian, gaussian, noise, ad.schedules.karras(8), bad)


def test_analyze_teleport_cli(tmp_path, capsys):
    X = ad.datasets.load("default")[:200]
    ref = ad.GaussianDenoiser(rank=20).fit(X).save(tmp_path / "ref.h5")
    out = tmp_path / "teleport"
    assert main(["analyze", "teleport", "--reference", str(ref), "--limit", "200", "-n", "2",
                 "--steps", "6", "--skips", "2,4", "--device", "cpu", "-o", str(out)]) == 0
    saved = json.loads((out / "teleport.json").read_text())
    assert [r["skip"] for r in saved["by_skip"]] == [0, 2, 4] and saved["command"].startswith("analytic-denoisers analyze")
    assert (out / "teleport.png").is_file() and (out / "teleport-samples.png").is_file()


# --- trajectory geometry ---------------------------------------------------------------------

def _noise(n, shape=(1, 3, 3), seed=0):
    return torch.randn((n,) + shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("rank", [None, 4])
def test_closed_form_top2_fraction_matches_the_formula(rank):
    X, _, _ = gaussian_problem((1, 3, 3), n=500)
    g = ad.GaussianDenoiser(rank=rank).fit(X)
    sigmas = ad.schedules.karras(12, 0.01, 3.0)
    x_T = 3.0 * _noise(6)
    flat = x_T.reshape(6, -1) - g.mean_
    coords = flat @ g.eigvecs_
    perp_sq = flat.square().sum(1) - coords.square().sum(1)
    measured = trajectory.top2_fraction(g.trajectory(x_T, sigmas))  # PCA of the pixel-space path
    formula = trajectory.gaussian_top2_fraction(g.eigvals_, sigmas, coords, perp_sq)
    # Gaussian paths are nearly planar: compare what lies outside the plane, relatively
    assert float((1 - measured).min()) > 1e-8
    torch.testing.assert_close(1 - measured, 1 - formula, rtol=1e-7, atol=0)


def test_top2_fraction_of_planar_and_spread_paths():
    t = torch.linspace(0, 3, 20, dtype=torch.float64)
    a, b = _noise(1, (9,), seed=1)[0], _noise(1, (9,), seed=2)[0]
    plane = (torch.cos(t)[:, None] * a + torch.sin(t)[:, None] * b).reshape(20, 1, 1, 3, 3)
    assert abs(float(trajectory.top2_fraction(plane)) - 1) < 1e-12
    spread = _noise(20, (1, 1, 3, 3), seed=3)  # 20 random states use every direction
    assert float(trajectory.top2_fraction(spread)) < 0.8


def test_gaussian_commitment_matches_the_closed_form(gaussian):
    # x̂0 along u_i is sqrt(lam_i / (lam_i + sigma^2)) of its final value, for every start
    sigmas = ad.schedules.karras(200, 0.002, 80.0)
    path = trajectory.record_path(gaussian, _noise(40), sigmas)
    ratios = trajectory.component_ratios(path["denoised"], path["states"][-1], gaussian.mean_, gaussian.eigvecs_)
    lam = gaussian.eigvals_
    exact = torch.sqrt(lam / (lam + sigmas[:-1, None].square()))
    torch.testing.assert_close(ratios, exact, rtol=0, atol=2e-4)
    for q in (0.5, 0.9):
        torch.testing.assert_close(trajectory.commit_sigma(ratios, sigmas[:-1], q),
                                   trajectory.gaussian_commit_sigma(lam, q), rtol=2e-3, atol=0)


def test_rank_correlation():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, float("nan")], dtype=torch.float64)
    assert trajectory.rank_correlation(a, a.exp()) == pytest.approx(1.0)  # any increasing map
    assert trajectory.rank_correlation(a, -a) == pytest.approx(-1.0)
    assert trajectory.rank_correlation(a, torch.tensor([2.0, 1.0, 4.0, 3.0, 0.0])) == pytest.approx(0.6)
    assert math.isnan(trajectory.rank_correlation(a[:2], a[:2]))  # too few finite pairs
    assert math.isnan(trajectory.rank_correlation(a, torch.ones(5)))  # a constant side
    # ties take their average rank: ranks (1..5) against (3, 3, 3, 3, 5)
    six = torch.arange(1.0, 6.0)
    assert trajectory.rank_correlation(six, torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0])) == pytest.approx(0.5 ** 0.5)


def test_commit_sigma_interpolates_after_the_last_drop():
    sigmas = torch.tensor([16.0, 8.0, 4.0, 2.0, 1.0], dtype=torch.float64)
    ratios = torch.tensor([[0.1, 0.6, 0.2, 0.6], [0.4, 0.4, 0.3, 0.7], [0.6, 0.7, 0.35, 0.8],
                           [0.95, 1.0, 0.4, 0.9], [1.0, 1.0, 0.45, 1.0]], dtype=torch.float64)
    got = trajectory.commit_sigma(ratios, sigmas, 0.5)
    # column 0: 0.4 at 8 -> 0.6 at 4, halfway in log sigma; column 1 dips below 0.5 again at 8
    # (0.4 -> 0.7: a third of the way); column 2 never reaches 0.5; column 3 is above it from the
    # first step (a lower bound)
    torch.testing.assert_close(got[:2], torch.tensor([32 ** 0.5, 8 * 0.5 ** (1 / 3)], dtype=torch.float64))
    assert got[2].isnan() and got[3] == 16.0
    level = trajectory.commit_sigma(ratios[:, :1], sigmas, 0.9)
    torch.testing.assert_close(level, torch.tensor([4.0 * 0.5 ** (0.3 / 0.35)], dtype=torch.float64))


def test_gaussian_perturbation_gain_is_the_closed_form(gaussian):
    # the Gaussian flow is affine, so a perturbation's effect on the end is exact for any start;
    # Heun's error on it shrinks at second order with the number of steps
    errors = []
    for n in (100, 200):
        sigmas = ad.schedules.karras(n, 0.002, 80.0)
        path = trajectory.record_path(gaussian, _noise(5), sigmas)
        steps = [0, 2 * n // 5, 7 * n // 10, n - 1]
        out = trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, steps, norm=0.3, seed=4)
        assert torch.allclose(out["delta"].reshape(5, -1).norm(dim=1), torch.full((5,), 0.3, dtype=torch.float64))
        exact = torch.stack([trajectory.gaussian_flow_gain(out["delta"], float(sigmas[k]), gaussian.eigvals_,
                                                           gaussian.eigvecs_) / 0.3 for k in steps])
        assert float(exact[0].max()) < 0.1 and float(exact[-1].min()) > 0.9  # late perturbations survive
        errors.append(float(((out["gain"] - exact) / exact).abs().max()))
    assert errors[0] < 3e-3 and errors[1] < 1e-3 and errors[0] / errors[1] > 3.5
    for bad, match in (([200], "steps must be a non-empty list"), ([], "steps must be a non-empty list")):
        with pytest.raises(ValueError, match=match):
            trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, bad)
    with pytest.raises(ValueError, match="norm must be positive"):
        trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, [0], norm=0.0)
    with pytest.raises(ValueError, match="unknown sampler"):
        trajectory.perturbation_sensitivity(gaussian, path["states"], sigmas, [0], method="rk4")
    with pytest.raises(ValueError, match="one state per sigma"):
        trajectory.perturbation_sensitivity(gaussian, path["states"][1:], sigmas, [0])


def test_trajectory_geometry_checks_its_input_before_sampling(gaussian):
    class Refuses:
        def denoise(self, x, sigma):
            raise AssertionError("sampled before the input was checked")

    sigmas = ad.schedules.karras(4, 0.01, 10.0)
    with pytest.raises(ValueError, match="steps must be a non-empty list"):
        trajectory.trajectory_geometry(Refuses(), gaussian, _noise(2), sigmas, perturb_steps=[4])
    with pytest.raises(ValueError, match="unknown sampler"):
        trajectory.trajectory_geometry(Refuses(), gaussian, _noise(2), sigmas, method="rk4")
    with pytest.raises(ValueError, match="noise"):
        trajectory.trajectory_geometry(Refuses(), gaussian, _noise(2, (1, 4, 4)), sigmas)


def test_component_ratios_are_nan_for_directions_the_samples_lack():
    U = torch.eye(3, dtype=torch.float64)[:, :2]
    final = torch.tensor([[1.0, 0.0, 5.0], [2.0, 0.0, -1.0]], dtype=torch.float64).reshape(2, 1, 1, 3)
    ratios = trajectory.component_ratios(0.5 * final[None], final, torch.zeros(3), U)
    assert ratios[0, 0] == 0.5 and ratios[0, 1].isnan()


# --- resolution chromatography ---------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 4, 4), (2, 5, 7)])
def test_resolution_bands_are_orthogonal_and_sum_to_the_image(shape):
    x = _noise(3, shape)
    bands = chromatography.resolution_bands(x)
    assert len(bands) == chromatography.default_levels(shape) + 1
    torch.testing.assert_close(bands.sum(0), x)
    flat = bands.flatten(2)
    gram = torch.einsum("knd,lnd->kln", flat, flat)  # (K + 1, K + 1, N) band inner products
    off = gram[~torch.eye(len(bands), dtype=torch.bool)]
    assert float(gram.diagonal().min()) > 1e-3 and float(off.abs().max()) < 1e-12
    for size in (2, 4):  # projections: idempotent, and nested (coarser blocks are unions of finer ones)
        once = chromatography.block_means(x, size)
        torch.testing.assert_close(chromatography.block_means(once, size), once)
        torch.testing.assert_close(chromatography.block_means(once, 2 * size), chromatography.block_means(x, 2 * size))
    assert torch.allclose(bands[-1], x.mean((-2, -1), keepdim=True).expand_as(x))  # coarsest: the mean
    U = torch.linalg.qr(_noise(1, (x[0].numel(), 5))[0])[0]
    torch.testing.assert_close(chromatography.band_weights(U, shape).sum(0), torch.ones(5, dtype=torch.float64))


def test_analytic_chromatogram_peaks_at_each_band_variance():
    # one eigen-direction inside each band: band k is generated at rate 2 s^2 lam^2 / (lam + s^2)^2,
    # which peaks at sigma = sqrt(lam_k) with height 1/2
    shape = (1, 4, 4)
    bands = chromatography.resolution_bands(_noise(1, shape, seed=5))[:, 0]
    U = torch.stack([b.flatten() / b.norm() for b in bands], 1)
    lam = torch.tensor([0.01, 0.3, 9.0], dtype=torch.float64)
    sigmas = torch.logspace(-3, 2, 2001, dtype=torch.float64).flip(0)
    generated, rate = chromatography.analytic_chromatogram(lam, U, shape, sigmas)
    torch.testing.assert_close(chromatography.peak_sigma(rate, sigmas), lam.sqrt(), rtol=4e-3, atol=0)
    # ... and half of each band is generated there too: g_k = lam_k / (lam_k + sigma^2)
    torch.testing.assert_close(trajectory.commit_sigma(generated.T, sigmas, 0.5), lam.sqrt(), rtol=1e-5, atol=0)
    torch.testing.assert_close(rate.max(1).values, torch.full((3,), 0.5, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(generated, lam[:, None] / (lam[:, None] + sigmas.square()))


def test_measured_chromatogram_of_the_gaussian_equals_the_analytic_one():
    X, _, _ = gaussian_problem((1, 4, 4), n=3000)
    g = ad.GaussianDenoiser().fit(X)
    sigmas = ad.schedules.karras(40, 0.002, 80.0)
    result = chromatography.chromatography(g, g, _noise(8000, (1, 4, 4), seed=6), sigmas)
    analytic = torch.tensor(result["generated_at_steps"]["analytic at steps"])
    measured = torch.tensor(result["generated_at_steps"]["denoiser"])
    assert float((measured - analytic).abs().max()) < 0.01  # Monte Carlo error of 8000 samples
    assert result["peak_sigma"]["denoiser"] == result["peak_sigma"]["analytic at steps"]
    torch.testing.assert_close(torch.tensor(result["half_sigma"]["denoiser"]),
                               torch.tensor(result["half_sigma"]["analytic at steps"]), rtol=0.02, atol=0)


def test_step_position_along_a_schedule():
    sigmas = ad.schedules.karras(10, 0.002, 80.0)
    for k in (0, 4, 9):
        assert abs(float(chromatography.step_position(sigmas[k], sigmas)) - k / 9) < 1e-12
    middle = (sigmas[4] * sigmas[5]).sqrt()  # halfway between steps 4 and 5 in log sigma
    assert abs(float(chromatography.step_position(middle, sigmas)) - 4.5 / 9) < 1e-12
    assert float(chromatography.step_position(1e3, sigmas)) == 0.0  # clamped to the schedule
    assert float(chromatography.step_position(1e-5, sigmas)) == 1.0
    assert float(chromatography.step_position(0.5, ad.schedules.karras(1, 0.1, 10.0))) == 0.0  # one step


def test_chromatography_rejects_bad_levels_and_sizes():
    x = _noise(1, (1, 8, 8))
    for levels in (0, 4, 2.5, True):  # 8x8 images have 3 levels
        with pytest.raises(ValueError, match=r"levels must be an integer in \[1, 3\]"):
            chromatography.resolution_bands(x, levels)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        chromatography.block_means(x, 0)


# --- locality maps ---------------------------------------------------------------------------

def test_jacobian_of_the_gaussian_is_its_wiener_matrix(gaussian):
    x = _noise(3, seed=7)
    pixels = [0, 4, 8]
    for sigma in (0.05, 1.0):
        J = locality_maps.jacobian_rows(gaussian, x, sigma, pixels)
        W = wiener_matrix(sigma, gaussian.eigvals_, gaussian.eigvecs_)[pixels]
        torch.testing.assert_close(J, W.expand(3, -1, -1), rtol=0, atol=1e-12)
    result = locality_maps.locality_maps(gaussian, gaussian, x, [0.1, 1.0], pixels)
    for row in result["by_sigma"]:
        assert abs(row["cosine"]["median"] - 1) < 1e-12
        torch.testing.assert_close(torch.tensor(row["mass_in_mask_by_pixel"]),
                                   torch.tensor(row["wiener_mass_in_mask_by_pixel"]))


def test_batched_jacobian_rows_match_finite_differences():
    X = tiny_images(16, (1, 6, 6))
    unet = ad.UNetDenoiser(**TINY_UNET).fit(X.float())
    x, sigma, pixels = tiny_images(2, (1, 6, 6), seed=1), 0.5, [7, 20]
    J = locality_maps.jacobian_rows(unet, x, sigma, pixels)  # float64 through the network
    h = 1e-6
    for n in range(2):
        for j in range(36):
            e = torch.zeros_like(x[n:n + 1])
            e.view(-1)[j] = h
            diff = (unet.denoise(x[n:n + 1] + e, sigma) - unet.denoise(x[n:n + 1] - e, sigma)) / (2 * h)
            torch.testing.assert_close(J[n, :, j], diff.flatten()[pixels], rtol=1e-5, atol=1e-7)


def test_locality_maps_reject_bad_input(gaussian):
    x = _noise(1, seed=8)
    with pytest.raises(ValueError, match="pixels must be flat indices"):
        locality_maps.jacobian_rows(gaussian, x, 1.0, [9])
    with pytest.raises(ValueError, match="sigmas must be a non-empty list of positive numbers"):
        locality_maps.locality_maps(gaussian, gaussian, x, [0.0], [0])
    with pytest.raises(ValueError, match="outside the 3x3 image"):
        locality_maps.pixel_indices((1, 3, 3), [(3, 0)])

    class Detached:
        def denoise(self, x, sigma):
            return gaussian.denoise(x, sigma).detach()

    with pytest.raises(ValueError, match="does not let autograd reach"):
        locality_maps.jacobian_rows(Detached(), x, 1.0, [0])


# --- the CLI ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    X = ad.datasets.load("default")[:200]
    return ad.GaussianDenoiser(rank=20).fit(X).save(tmp_path_factory.mktemp("ref") / "ref.h5")


@pytest.mark.parametrize("name, extra, files", [
    ("trajectory", ["-n", "3", "--steps", "5", "--perturb-steps", "0,4"],
     ["trajectory.json", "trajectory.png", "trajectory-x0.png"]),
    ("chromatography", ["-n", "4", "--steps", "6"], ["chromatography.json", "chromatography.png"]),
    ("locality", ["--n-images", "2", "--sigmas", "0.1,1", "--pixels", "3:4,20:20"], ["locality.json", "locality.png"]),
])
def test_analyze_cli(tmp_path, small_reference, name, extra, files):
    out = tmp_path / name
    assert main(["analyze", name, "--reference", str(small_reference), "--limit", "200", "--device", "cpu",
                 "-o", str(out)] + extra) == 0
    saved = json.loads((out / files[0]).read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert saved["command"].startswith(f"analytic-denoisers analyze {name}") and saved["reference"]
    assert all((out / f).is_file() for f in files)
    if name == "trajectory":
        assert saved["perturbation"]["steps"] == [0, 4] and len(saved["top2"]["measured"]) == 3
    if name == "chromatography":
        assert saved["bands"] == ["28x28", "14x14", "7x7", "4x4", "2x2", "1x1"]
    if name == "locality":
        assert saved["pixels"] == [3 * 28 + 4, 20 * 28 + 20] and saved["threshold"] == 0.005


def test_analyze_cli_rejects_bad_pixels(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "locality", "--pixels", "3"])
    assert "row:col" in capsys.readouterr().err
