"""The reference UNet: network shapes, EDM preconditioning, seeded and resumable training."""

import csv

import numpy as np
import pytest
import torch

import analytic_denoisers as ad
from analytic_denoisers.unet import training
from analytic_denoisers.unet.estimator import UNetDenoiser
from analytic_denoisers.unet.network import UNet
from analytic_denoisers.sampling.parameterizations import edm_coefficients
from analytic_denoisers.core.artifact import info
from analytic_denoisers.unet.training import log_path
from references import TINY_UNET, tiny_images


@pytest.mark.parametrize("shape", [(1, 6, 6), (1, 5, 7), (3, 8, 8), (1, 28, 28)])
def test_unet_keeps_any_image_shape(shape):
    net = UNet(shape[0], base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1)
    x = torch.randn((2,) + shape)
    assert net(x, torch.zeros(2)).shape == x.shape


def test_bad_network_shape_raises():
    with pytest.raises(ValueError, match="multiple of 8"):
        UNet(1, base_channels=12)
    with pytest.raises(ValueError, match="channel_mult"):
        UNet(1, channel_mult=())


def test_edm_coefficients_match_the_paper():
    sigma, sd = torch.tensor([1e-3, 0.5, 2.0, 80.0], dtype=torch.float64), 0.5
    c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, sd)
    torch.testing.assert_close(c_skip, sd**2 / (sigma**2 + sd**2))
    torch.testing.assert_close(c_out, sigma * sd / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (sigma**2 + sd**2).sqrt())
    torch.testing.assert_close(c_noise, sigma.log() / 4)
    # the network's effective target (x0 - c_skip x) / c_out has unit variance for data of
    # variance sd^2 (Karras et al., Appendix B.6)
    torch.testing.assert_close(((1 - c_skip) ** 2 * sd**2 + c_skip**2 * sigma**2) / c_out**2,
                               torch.ones_like(sigma))


def test_untrained_network_is_the_posterior_mean_of_isotropic_gaussian_data():
    # the output convolution starts at zero, so D(x) = c_skip x: the Wiener filter of N(0, sd^2 I)
    model = UNetDenoiser(**TINY_UNET).build(1).double()
    x = tiny_images(3, dtype=torch.float64)
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    expected = (0.25 / (sigma**2 + 0.25)).reshape(3, 1, 1, 1) * x
    torch.testing.assert_close(model(x, sigma), expected)


def _fit(X, tmp_path=None, name="run.ckpt", **params):
    est = UNetDenoiser(**{**TINY_UNET, **params})
    kwargs = dict(checkpoint=tmp_path / name, checkpoint_every=2, log_every=1) if tmp_path else {}
    return est.fit(X, **kwargs)


def test_training_is_seeded_and_learns_a_one_image_dataset():
    # the posterior mean of a one-image dataset is that image at every sigma
    image = tiny_images(1, (1, 8, 8), seed=3, dtype=torch.float32)
    X = image.expand(32, -1, -1, -1)
    a, b = _fit(X, steps=80, lr=3e-3), _fit(X, steps=80, lr=3e-3)
    assert torch.equal(a.weights_, b.weights_)
    assert not torch.equal(a.weights_, _fit(X, steps=80, lr=3e-3, random_state=1).weights_)
    assert a.n_steps_ == 80 and a.loss_log_.shape == (2, 4)  # rows at steps 50 and 80
    x = image + torch.randn((8, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    untrained = 0.25 / (1 + 0.25) * x  # c_skip x: the output layer starts at zero
    error = [ad.metrics.mse(out, image.expand_as(x)).mean() for out in (a(x, 1.0), untrained)]
    assert error[0] < 0.3 * error[1]


def test_training_leaves_the_global_random_state_alone(monkeypatch):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: pytest.fail("reseeded CUDA"))
    _fit(tiny_images(8, dtype=torch.float32))
    assert torch.equal(torch.rand(3), expected)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path):
    X = tiny_images(20, dtype=torch.float32)
    straight = _fit(X, steps=6)
    _fit(X, tmp_path, steps=3)  # a shorter run, then the same command with more steps
    resumed = _fit(X, tmp_path, steps=6)
    assert torch.equal(resumed.weights_, straight.weights_) and resumed.n_steps_ == 6
    with open(log_path(tmp_path / "run.ckpt")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([float(r["loss"]) for r in rows], resumed.loss_log_[:, 1], rtol=1e-5)


def test_interrupted_training_saves_a_checkpoint_and_resumes(tmp_path, monkeypatch):
    X = tiny_images(20, dtype=torch.float32)
    straight = UNetDenoiser(**{**TINY_UNET, "steps": 5}).fit(X, log_every=2)
    real_loss, calls = training.Training.loss, []

    def interrupt_at_step_4(self, x0):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(self, x0)

    monkeypatch.setattr(training.Training, "loss", interrupt_at_step_4)
    est = UNetDenoiser(**{**TINY_UNET, "steps": 5})
    with pytest.raises(KeyboardInterrupt):
        est.fit(X, checkpoint=tmp_path / "x.ckpt", checkpoint_every=10, log_every=2)
    monkeypatch.setattr(training.Training, "loss", real_loss)
    assert torch.load(tmp_path / "x.ckpt", weights_only=True)["step"] == 3
    resumed = est.fit(X, checkpoint=tmp_path / "x.ckpt", checkpoint_every=10, log_every=2)
    assert torch.equal(resumed.weights_, straight.weights_)
    # the loss log too: row 4 averages steps 3 and 4 although the run stopped after step 3
    np.testing.assert_array_equal(resumed.loss_log_[:, :3], straight.loss_log_[:, :3])
    assert resumed.loss_log_[:, 0].tolist() == [2, 4, 5]


def test_checkpoint_mismatches_are_clear_errors(tmp_path):
    X = tiny_images(20, dtype=torch.float32)
    _fit(X, tmp_path, steps=np.int64(2), batch_size=np.int64(4))  # numpy ints are saved as ints
    with pytest.raises(ValueError, match="different hyper-parameters.*lr"):
        _fit(X, tmp_path, steps=4, lr=0.5)
    with pytest.raises(ValueError, match="different images"):
        _fit(X[:10], tmp_path, steps=4)
    with pytest.raises(ValueError, match="already trained 2 steps, more than steps=1"):
        _fit(X, tmp_path, steps=1)
    state = torch.load(tmp_path / "run.ckpt", weights_only=True)
    torch.save({**state, "device": "cuda"}, tmp_path / "cuda.ckpt")
    with pytest.raises(ValueError, match="trained on cuda, not cpu"):
        _fit(X, tmp_path, name="cuda.ckpt", steps=4)
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.ckpt: unreadable training checkpoint"):
        _fit(X, tmp_path, name="bad.ckpt")


def test_bad_training_arguments_raise():
    X = tiny_images(4, dtype=torch.float32)
    with pytest.raises(ValueError, match="unconditional"):
        UNetDenoiser(**TINY_UNET).fit(X, np.zeros(4, dtype=int))
    for bad, match in [({"steps": 0}, "steps must be a positive integer"), ({"random_state": None}, "random_state"),
                       ({"lr": -1.0}, "lr must be a positive"), ({"ema_decay": 1.0}, r"ema_decay must be a number in \[0, 1\)")]:
        with pytest.raises(ValueError, match=match):
            UNetDenoiser(**{**TINY_UNET, **bad}).fit(X)


def test_gradients_flow_to_the_input_not_the_weights():
    den = _fit(tiny_images(8, dtype=torch.float32))
    x = tiny_images(2, dtype=torch.float64).requires_grad_(True)
    den(x, 0.5).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in den.network(x).parameters())
    with torch.no_grad():
        assert not den(x, 0.5).requires_grad


def test_saved_file_holds_the_loss_log(tmp_path):
    den = _fit(tiny_images(8, dtype=torch.float32), steps=3)
    den.save(tmp_path / "unet.h5")
    meta = info(tmp_path / "unet.h5")
    assert meta["class"] == "UNetDenoiser" and meta["params"]["channel_mult"] == [1, 2]
    np.testing.assert_array_equal(ad.load(tmp_path / "unet.h5").loss_log_, den.loss_log_)
