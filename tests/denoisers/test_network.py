"""NetworkDenoiser: a trained network as a sigma-native denoiser, checked against the closed form.

The Gaussian denoiser is written below as an eps-, x0-, v-, EDM-F- and D-network, each reading its
time input its own way (the formulas are written here from the papers, independently of
``sampling.parameterizations``); the adapter must give the Gaussian denoiser back.
"""

import types

import pytest
import torch
from torch import nn

import analytic_denoisers as ad
from analytic_denoisers.testing import check_denoiser
from references import tiny_images

DATA = tiny_images(40, seed=30)
GAUSS = ad.GaussianDenoiser().fit(DATA)
ALPHA_BARS = ad.schedules.ddpm_linear_alpha_bars(1000)  # float64, sigma 0.0100005 ... 157
TABLE = ((1 - ALPHA_BARS) / ALPHA_BARS).sqrt()  # sigma of each timestep, increasing
SIGMA_DATA = 0.5


def sigma_of(time, time_input):
    """How each test network reads its time input (a discrete one: linear in log-sigma)."""
    if time_input == "sigma":
        return time
    if time_input == "c_noise":
        return torch.exp(4 * time)
    low = time.double().floor().long().clamp(max=len(TABLE) - 2)
    frac = time.double() - low
    return torch.exp((1 - frac) * TABLE[low].log() + frac * TABLE[low + 1].log()).to(time.dtype)


def gaussian_network(parameterization, time_input, seen=None):
    """The Gaussian denoiser of DATA as a network predicting ``parameterization``."""
    def network(x_in, time):
        if seen is not None:
            seen.append(time.clone())
        s = sigma_of(time, time_input).reshape(-1, 1, 1, 1)
        alpha_bar = 1 / (1 + s**2)  # VP: x_t = sqrt(alpha_bar) (x0 + sigma eps)
        if parameterization in ("eps", "x0", "v"):
            x = x_in / alpha_bar.sqrt()
        elif parameterization == "edm":  # Karras et al. Table 1: c_in = 1 / sqrt(sigma^2 + sigma_data^2)
            x = x_in * (s**2 + SIGMA_DATA**2).sqrt()
        else:
            x = x_in
        d = GAUSS(x, s.flatten())
        eps = (x - d) / s
        return {"eps": eps, "x0": d, "denoised": d,
                "v": alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * d,  # Salimans & Ho
                "edm": (d - SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2) * x) / (s * SIGMA_DATA / (s**2 + SIGMA_DATA**2).sqrt()),
                }[parameterization]
    return network


def adapter(kind, time, **params):
    """The adapter around the ``kind``-network reading ``time``; ``params`` override its settings."""
    return ad.NetworkDenoiser(**{**dict(network=gaussian_network(kind, time), parameterization=kind, time_input=time,
                                        alpha_bars=ALPHA_BARS, sigma_data=SIGMA_DATA), **params})


@pytest.mark.parametrize("time_input", ["timestep", "sigma", "c_noise"])
@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "edm", "denoised"])
def test_every_parameterization_gives_the_gaussian_back(parameterization, time_input):
    x = tiny_images(5, seed=31) + 0.3 * tiny_images(5, seed=32)
    low = 0.02 if time_input == "timestep" else 1e-2  # inside the discrete table's range
    sigma = torch.tensor([low, 0.1, 1.0, 10.0, 100.0], dtype=torch.float64)  # off the timestep grid
    den = adapter(parameterization, time_input).fit(DATA)
    torch.testing.assert_close(den(x, sigma), GAUSS(x, sigma), rtol=1e-5, atol=1e-5)


def test_timesteps_on_the_grid_are_exact_integers():
    seen = []
    den = ad.NetworkDenoiser(gaussian_network("eps", "timestep", seen), alpha_bars=ALPHA_BARS).fit(DATA)
    steps = torch.tensor([0, 1, 500, 998, 999])
    x = tiny_images(5, seed=33)
    torch.testing.assert_close(den(x, TABLE[steps]), GAUSS(x, TABLE[steps]), rtol=1e-10, atol=1e-10)
    assert torch.equal(seen[0], steps.double())
    den(x[:2], torch.tensor([0.005, 500.0], dtype=torch.float64))  # outside the table: its ends
    assert seen[1].tolist() == [0.0, 999.0]


@pytest.mark.parametrize("parameterization", ["eps", "v", "edm"])
def test_the_adapter_meets_the_contract(parameterization):
    check_denoiser(lambda **p: adapter(parameterization, "sigma", **p))


class Conv(nn.Module):
    """A float32 network with weights; its output shape, type and labels vary by ``style``."""

    def __init__(self, style="tensor"):
        super().__init__()
        self.conv, self.style, self.labels = nn.Conv2d(1, 1, 3, padding=1), style, []

    def forward(self, x, time, y=None):
        self.labels.append(None if y is None else y.tolist())
        out = self.conv(x) * time.reshape(-1, 1, 1, 1).log1p()
        return {"tensor": out, "tuple": (out,), "diffusers": types.SimpleNamespace(sample=out)}[self.style]


def test_modules_dtypes_outputs_labels_and_batches():
    x = tiny_images(5, seed=34)  # float64, the networks float32
    nets = [Conv(style) for style in ("tensor", "tuple", "diffusers")]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    outs = [ad.NetworkDenoiser(net, time_input="sigma", batch_size=2).fit(DATA)(x, 0.5) for net in nets]
    assert outs[0].dtype == torch.float64 and outs[0].shape == x.shape
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=0, atol=0)
    assert nets[0].labels == [None] * 3  # three batches of at most 2 images, no labels
    labelled = ad.NetworkDenoiser(nets[0], time_input="sigma", batch_size=2).fit(DATA, torch.arange(40) % 3)
    labelled(x, 0.5, y=torch.tensor([2, 0, 1, 1, 0]))
    assert nets[0].labels[3:] == [[2, 0], [1, 1], [0]]  # each batch with its own labels
    with pytest.raises(ValueError, match="the network is on meta and x on cpu"):
        ad.NetworkDenoiser(Conv().to("meta"), time_input="sigma").fit(DATA)(x, 0.5)
    with pytest.raises(ValueError, match=r"the network returned \(5, 36\)"):
        ad.NetworkDenoiser(lambda x, t: x.flatten(1), time_input="sigma").fit(DATA)(x, 0.5)


def test_autograd_reaches_x_through_the_network():
    den = adapter("eps", "sigma").fit(DATA)
    x = tiny_images(2, seed=35).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: den(x, torch.tensor([0.3, 3.0], dtype=torch.float64)), (x,))
    assert not den(x.detach(), 0.3).requires_grad


def test_saved_configuration_loads_with_the_network_given(tmp_path):
    den = adapter("v", "timestep").fit(DATA)
    path = den.save(tmp_path / "net.h5")
    assert "network" not in ad.core.artifact.info(path)["params"]
    with pytest.raises(ValueError, match="without its network .* pass network=... to load"):
        ad.load(path)
    back = ad.load(path, network=den.network)
    x = tiny_images(3, seed=36)
    torch.testing.assert_close(back(x, 0.7), den(x, 0.7), rtol=0, atol=0)


def test_bad_configurations_are_refused_at_fit():
    for params, match in ((dict(alpha_bars=None), "needs the network's alpha_bars"),
                          (dict(alpha_bars=ALPHA_BARS.flip(0)), "strictly decreasing"),
                          (dict(alpha_bars=[0.5, 1.5]), r"alpha_bars must be a non-empty list of numbers in \(0, 1\)"),
                          (dict(parameterization="score"), "parameterization must be one of"),
                          (dict(network="unet.pt"), "network must be a torch.nn.Module or a callable")):
        with pytest.raises(ValueError, match=match):
            ad.NetworkDenoiser(**{**dict(network=gaussian_network("eps", "timestep"), alpha_bars=ALPHA_BARS),
                                  **params}).fit(DATA)
