"""NetworkDenoiser.from_diffusers on tiny diffusers UNets built and saved here (diffusers is in the
test extra, so CI runs this): D(x, sigma_t) equals the x0 that diffusers' own scheduler derives."""

import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.core.compat import import_diffusers
from analytic_denoisers.testing import check_denoiser
from references import tiny_images

diffusers = pytest.importorskip("diffusers", reason="the diffusers extra") and import_diffusers()
DATA = tiny_images(12, (1, 8, 8), seed=40)


def tiny_pipeline(folder, prediction_type, seed=0):
    """A tiny random UNet2DModel with a 100-step DDPM scheduler, saved as a pipeline in ``folder``."""
    torch.manual_seed(seed)  # the UNet's initial weights (only inside this helper)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100, prediction_type=prediction_type, clip_sample=False)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return unet, scheduler


@pytest.mark.parametrize("prediction_type, parameterization", [("epsilon", "eps"), ("sample", "x0"), ("v_prediction", "v")])
def test_pipeline_folder_matches_the_schedulers_own_x0(tmp_path, prediction_type, parameterization):
    unet, scheduler = tiny_pipeline(tmp_path, prediction_type)
    den = ad.NetworkDenoiser.from_diffusers(tmp_path).fit(DATA)
    assert den.parameterization == parameterization and den.time_input == "timestep"
    x0 = tiny_images(3, (1, 8, 8), seed=41)
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(42))
    for t in (0, 37, 99):  # on the timestep grid: the adapter's sigma_t is the scheduler's timestep t
        alpha_bar = scheduler.alphas_cumprod[t].double()
        sigma = float(((1 - alpha_bar) / alpha_bar).sqrt())
        x = x0 + sigma * noise  # sigma-native state; diffusers sees x_t = sqrt(alpha_bar) x
        x_t = (alpha_bar.sqrt() * x).float()
        with torch.no_grad():
            prediction = unet(x_t, torch.full((3,), t)).sample
        expect = scheduler.step(prediction, t, x_t).pred_original_sample
        torch.testing.assert_close(den(x, sigma).float(), expect, rtol=1e-5, atol=1e-5)


def test_bare_unet_folder_with_its_scheduler_and_clear_errors(tmp_path):
    unet, scheduler = tiny_pipeline(tmp_path / "pipe", "epsilon")
    unet.save_pretrained(tmp_path / "unet-only")
    scheduler.save_pretrained(tmp_path / "scheduler-only")
    den = ad.NetworkDenoiser.from_diffusers(tmp_path / "unet-only", scheduler=tmp_path / "scheduler-only").fit(DATA)
    ref = ad.NetworkDenoiser.from_diffusers(tmp_path / "pipe").fit(DATA)
    x = tiny_images(2, (1, 8, 8), seed=43)
    torch.testing.assert_close(den(x, 0.7), ref(x, 0.7), rtol=0, atol=0)  # off the grid too
    with pytest.raises(FileNotFoundError, match="scheduler_config.json not found"):
        ad.NetworkDenoiser.from_diffusers(tmp_path / "unet-only")
    with pytest.raises(FileNotFoundError, match="nowhere/config.json not found"):
        ad.NetworkDenoiser.from_diffusers(tmp_path / "nowhere")


def test_a_diffusers_unet_meets_the_contract(tmp_path):
    tiny_pipeline(tmp_path, "v_prediction")
    den = ad.NetworkDenoiser.from_diffusers(tmp_path, batch_size=2)
    # the UNet computes in float32: batches of other sizes round differently (measured 4e-7)
    check_denoiser(lambda **params: ad.NetworkDenoiser(**{**den.get_params(), **params}),
                   tolerance=dict(rtol=1e-5, atol=1e-5))
