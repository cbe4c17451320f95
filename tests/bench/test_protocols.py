"""The papers' protocols: the shipped protocol files, the sampling grids they express, and the
Lukoianov et al. protocol reproduced end to end against diffusers' own DDIM loop."""

import json
import math

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers import bench
from analytic_denoisers.cli import main
from analytic_denoisers.core.compat import import_diffusers
from analytic_denoisers.core.noise import seeded_noise

N_TRAIN = 48
QUIET = dict(progress=False, log=lambda line: None)


@pytest.fixture(scope="module")
def gaussian_file(tmp_path_factory):
    X = ad.datasets.load("default")[:N_TRAIN]
    return ad.GaussianDenoiser().fit(X).save(tmp_path_factory.mktemp("ref") / "gauss.h5")


def small(reference, path=None, **sampling):
    """A shipped protocol (or the default) made small: 2 samples, a tiny denoising grid and gate."""
    return bench.make_protocol({
        "reference": str(reference), "train_limit": N_TRAIN, "methods": ["gaussian", "empirical"],
        "denoising": {"n_images": 2, "sigmas": [0.5]}, "gate": {"n_images": 4, "sigmas": [0.5]},
        "sampling": {"n_samples": 2, **sampling}}, path=path)


def test_every_shipped_protocol_loads_and_states_its_source():
    names = bench.shipped_protocols()
    assert {"lukoianov-ddim10", "golddiff-ddim10", "kamb", "edm-heun"} <= set(names)
    for name in names:
        protocol = bench.make_protocol(path=name)
        assert protocol["description"], name
        bench.sampling_grid(protocol["sampling"])
    # edm-heun is the package's default protocol
    assert bench.make_protocol(path="edm-heun")["sampling"] == bench.DEFAULT_PROTOCOL["sampling"]
    grid = bench.sampling_grid(bench.make_protocol(path="lukoianov-ddim10")["sampling"])
    assert grid["timesteps"].tolist() == list(range(900, -1, -100))  # diffusers' "leading" spacing
    assert grid["sigmas"][0] == pytest.approx(60.82, abs=0.01) and grid["sigmas"][-1] == 0
    kamb = bench.sampling_grid(bench.make_protocol(path="kamb")["sampling"])["sigmas"]
    t = torch.arange(20, 0, -1, dtype=torch.float64) / 20  # alpha_bar(t) = cos^2(t / 1.008 pi / 2)
    alpha_bar = torch.cos(t / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(kamb[:-1], ((1 - alpha_bar) / alpha_bar).sqrt(), rtol=1e-10, atol=0)
    with pytest.raises(FileNotFoundError, match="shipped protocols: edm-heun"):
        bench.make_protocol(path="lukoianov-ddim100")


def test_lukoianov_protocol_is_diffusers_ddim_end_to_end(gaussian_file):
    diffusers = import_diffusers()
    results = bench.run(small(gaussian_file, path="lukoianov-ddim10"), **QUIET)
    smp = results["sampling"]
    assert smp["timesteps"] == list(range(900, -1, -100))

    # the reference's sample, as their code makes it: diffusers' DDIM loop, clip_sample=True,
    # the last step's x0-prediction
    ref = ad.load(gaussian_file)
    scheduler = diffusers.DDIMScheduler(prediction_type="sample")
    scheduler.set_timesteps(10)
    x_t = seeded_noise(range(0, 2), (1, 28, 28))
    for t in scheduler.timesteps:
        alpha_bar = float(scheduler.alphas_cumprod[t])
        x0 = ref(x_t / math.sqrt(alpha_bar), math.sqrt((1 - alpha_bar) / alpha_bar))
        x_t = scheduler.step(x0, t, x_t, eta=0.0).prev_sample
    assert (results["_images"]["samples"]["reference"] - x0).abs().max() < 1e-5

    same = smp["methods"]["gaussian"]  # the same Gaussian as the reference: perfect agreement
    assert same["r2_unbiased"] == 1.0 and same["x0_by_step"]["r2"] == [1.0] * 10
    assert same["x0_single_by_step"]["r2"] == [1.0] * 10
    other = smp["methods"]["empirical"]  # both variants start from the same state, then part
    trajectory, single = other["x0_by_step"]["r2_unbiased"], other["x0_single_by_step"]["r2_unbiased"]
    assert trajectory[0] == single[0] and trajectory[1:] != single[1:]
    assert other["denoiser_calls"] == 10


def test_grids_from_the_command_line(tmp_path, gaussian_file):
    out = tmp_path / "bench"
    assert main(["bench", "--reference", str(gaussian_file), "--limit", str(N_TRAIN), "--methods", "gaussian",
                 "--n-images", "2", "--sigmas", "0.5", "--gate-images", "4", "--gate-sigmas", "0.5", "-n", "2",
                 "--sampler", "ddim", "--schedule", "vp", "--steps", "4", "--timestep-spacing", "trailing",
                 "--clip-sample", "1", "--final", "denoised", "--single", "--clamp-unit", "-o", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["sampling"]["timesteps"] == [999, 749, 499, 249]
    assert saved["protocol"]["sampling"]["clamp_unit"] and saved["protocol"]["sampling"]["single"]
    assert "trailing spacing" in (out / "results.md").read_text()
    sigmas = [5.0, 1.0, 0.2]
    assert main(["bench", "--reference", str(gaussian_file), "--limit", str(N_TRAIN), "--methods", "gaussian",
                 "--n-images", "2", "--sigmas", "0.5", "--gate-images", "4", "--gate-sigmas", "0.5", "-n", "2",
                 "--sampling-sigmas", ",".join(map(str, sigmas)), "-o", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["sampling"]["sigmas"] == sigmas + [0.0] and saved["protocol"]["sampling"]["schedule"] == "sigmas"


def test_clamping_to_the_unit_range_compares_clamped_images(gaussian_file):
    plain = bench.run(small(gaussian_file, steps=3), **QUIET)["sampling"]["methods"]["empirical"]
    clamped = bench.run(small(gaussian_file, steps=3, clamp_unit=True), **QUIET)["sampling"]["methods"]["empirical"]
    # (x + 1) / 2 halves every difference: MSE / 4 wherever the clamp does nothing, less where it acts
    assert clamped["mse"] <= plain["mse"] / 4 + 1e-12
