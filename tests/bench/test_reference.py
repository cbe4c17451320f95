"""Every kind of reference the benchmark and the analyses take, and clear errors for the rest."""

import json
import sys

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers import bench
from analytic_denoisers.bench.reference import open_reference
from analytic_denoisers.cli import main
from references import tiny_images

THREADS = torch.get_num_threads()

SHRINK_SOURCE = '''
import torch

def shrink(x, sigma):  # the Wiener filter of N(0, I), as a network that is already D(x, sigma)
    return x / (1 + sigma.reshape(-1, 1, 1, 1) ** 2)

def denoiser():
    return shrink, {"parameterization": "denoised", "time_input": "sigma"}

def eps_network():
    return (lambda x_t, sigma: x_t * 0.0), {"parameterization": "eps", "time_input": "sigma"}

def not_a_network():
    return 42
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "my_reference.py").write_text(SHRINK_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_reference"
    sys.modules.pop("my_reference", None)


def test_every_kind_of_reference(tmp_path, factory_module):
    data = tiny_images(8)
    x = tiny_images(3, seed=1)
    gauss = ad.GaussianDenoiser().fit(data)
    assert open_reference(gauss) == (gauss, "GaussianDenoiser")  # an object, as it is
    path = gauss.save(tmp_path / "g.h5")
    loaded, name = open_reference(str(path))
    torch.testing.assert_close(loaded(x, 0.5), gauss(x, 0.5))
    assert name.endswith("g.h5")
    shrink, name = open_reference(f"{factory_module}:denoiser")
    assert name == f"{factory_module}:denoiser" and isinstance(shrink, ad.NetworkDenoiser)
    torch.testing.assert_close(shrink.fit(data)(x, 1.0), x / 2)
    eps, _ = open_reference(f"{factory_module}:eps_network", {"batch_size": 2})  # params override
    assert eps.parameterization == "eps" and eps.batch_size == 2
    torch.testing.assert_close(eps.fit(data)(x, 1.0), x)  # eps = 0: D = x
    plain, _ = open_reference(lambda x, sigma: x)  # a bare callable is the posterior mean itself
    assert plain.parameterization == "denoised"


def test_unusable_references_say_what_is_accepted(tmp_path, factory_module):
    (tmp_path / "net.pt").write_bytes(b"not ours")
    for spec, error, match in ((tmp_path / "net.pt", ValueError, "not a file this package reads"),
                               (tmp_path / "missing.h5", FileNotFoundError, "no such file or folder"),
                               (f"{factory_module}:nothing", ValueError, "cannot import nothing"),
                               (f"{factory_module}:not_a_network", ValueError, "gave int, not a network"),
                               ("no_such_module_here:f", ValueError, "cannot import f")):
        with pytest.raises(error, match=match) as info:
            open_reference(spec)
        assert "accepted references:" in str(info.value)
    class Bare:  # a denoiser without hyper-parameters
        def denoise(self, x, sigma):
            return x

    with pytest.raises(ValueError, match="takes no reference parameters"):
        open_reference(Bare(), {"rank": 3})


def test_bench_and_analyses_take_a_network_reference(tmp_path, factory_module):
    protocol = bench.make_protocol({"methods": ["gaussian"], "train_limit": 100,
                                    "denoising": {"n_images": 2, "sigmas": [0.5]},
                                    "sampling": {"n_samples": 2, "steps": 2}, "gate": {"n_images": 4, "sigmas": [0.5]}})
    results = bench.run(protocol, reference=f"{factory_module}:denoiser", progress=False, log=lambda line: None)
    ref = results["reference"]
    assert ref["class"] == "NetworkDenoiser" and ref["parameterization"] == "denoised"
    assert ref["trained_on_same_images"] is None and "network" not in ref["params"]
    assert "the images it was trained on are not known" in bench.markdown(results)
    out = tmp_path / "bench"
    code = main(["bench", "--reference", f"{factory_module}:eps_network", "--reference-param", "batch_size=4",
                 "--methods", "gaussian", "--limit", "100", "--n-images", "2", "--sigmas", "0.5", "-n", "2",
                 "--steps", "2", "--protocol", str(_tiny_gate(tmp_path)), "-o", str(out)])
    assert code == 0 and (out / "results.md").is_file()
    code = main(["analyze", "teleport", "--reference", f"{factory_module}:denoiser", "--limit", "100", "-n", "2",
                 "--steps", "4", "--skips", "2", "-o", str(tmp_path / "teleport")])
    assert code == 0 and (tmp_path / "teleport" / "teleport.json").is_file()
    assert main(["bench", "--reference", str(tmp_path / "nope.pt"), "-o", str(out)]) == 2


def _tiny_gate(folder):
    path = folder / "gate.json"
    path.write_text('{"gate": {"n_images": 4, "sigmas": [0.5]}}')
    return path


def test_sigmas_outside_a_networks_timesteps_are_flagged_and_the_gate_is_set_from_the_cli(tmp_path, factory_module):
    lines = []
    protocol = bench.make_protocol({"methods": ["gaussian"], "train_limit": 100,
                                    "reference_params": {"time_input": "timestep",
                                                         "alpha_bars": ad.schedules.ddpm_linear_alpha_bars().tolist()},
                                    "denoising": {"n_images": 2, "sigmas": [0.002, 0.5]},
                                    "sampling": {"n_samples": 2, "steps": 2}, "gate": {"n_images": 4, "sigmas": [0.5]}})
    results = bench.run(protocol, reference=f"{factory_module}:eps_network", progress=False, log=lines.append)
    low, high = results["reference"]["sigma_range"]
    assert 0.0100 < low < 0.0101 and 157 < high < 158  # DDPM's linear betas: sigma 0.01 ... 157
    outside = results["reference"]["sigmas_outside"]  # the grid's 0.002 and the Karras schedule's; 80 is inside
    assert outside and all(abs(s - 0.002) < 1e-12 for s in outside)
    assert any("0.002 lie outside" in line for line in lines)
    out = tmp_path / "bench"
    assert main(["bench", "--methods", "gaussian", "--limit", "100", "--n-images", "2", "--sigmas", "0.5", "-n", "2",
                 "--steps", "2", "--gate-images", "3", "--gate-sigmas", "0.5,1", "--threads", "1", "-o", str(out)]) == 0
    gate = json.loads((out / "results.json").read_text())["gate"]
    assert gate["n_images"] == 3 and [r["sigma"] for r in gate["by_sigma"]] == [0.5, 1.0]
    assert torch.get_num_threads() == THREADS  # --threads is undone when main returns
