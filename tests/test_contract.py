"""One contract suite over every registered denoiser (DESIGN.md, STYLE.md 12)."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import analytic_denoisers as ad
from analytic_denoisers.registry import METHODS
from references import TINY_UNET, tiny_images

SHAPE = (1, 6, 6)
# every registered method, variants that take a different code path, and the reference
# network (a tiny UNet trained for two steps): name -> (estimator class, params)
CASES = {name: (cls, {}) for name, cls in METHODS.items()}
CASES["els"] = (METHODS["local-score"], dict(patch_size=3, equivariant=True, padding="circular"))
CASES["bbels"] = (METHODS["local-score"], dict(patch_size=3, equivariant=True, padding="zeros"))
CASES["unet"] = (ad.UNetDenoiser, TINY_UNET)
# the hyper-parameter that only splits work, for the chunk-invariance test
CHUNK_PARAM = "chunk_size"


@pytest.fixture(params=sorted(CASES))
def method(request):
    return request.param


def make(case, **params):
    cls, preset = CASES[case]
    return cls(**{**preset, **params})


def fitted(method, dtype=torch.float64, **params):
    return make(method, **params).fit(tiny_images(16, SHAPE, seed=1, dtype=dtype))


def test_every_method_is_exported_and_has_a_chunk_parameter(method):
    cls = CASES[method][0]
    assert getattr(ad, cls.__name__) is cls
    assert CHUNK_PARAM in cls().get_params()


def test_fit_returns_self_and_clone_keeps_params(method):
    est = make(method)
    assert est.fit(tiny_images(5, SHAPE)) is est
    assert clone(est).get_params() == est.get_params()
    assert not hasattr(clone(est), "image_shape_")


def test_unfitted_use_raises(method):
    with pytest.raises(NotFittedError):
        make(method).denoise(tiny_images(2, SHAPE), 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_kept(method, dtype):
    den = fitted(method)
    x = tiny_images(3, SHAPE, seed=2, dtype=dtype)
    for out in (den.denoise(x, 0.5), den(x, 0.5), den.score(x, 0.5), den.eps(x, 0.5)):
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_input_stays_on_cuda_and_matches_cpu(method):
    den, x = fitted(method), tiny_images(3, SHAPE, seed=9)
    out = den(x.cuda(), 0.5)
    assert out.device.type == "cuda" and out.dtype == x.dtype
    torch.testing.assert_close(out.cpu(), den(x, 0.5))


def test_numpy_input_is_accepted(method):
    den, x = fitted(method), tiny_images(3, SHAPE, seed=3)
    torch.testing.assert_close(den(x.numpy(), 0.5), den(x, 0.5))


def test_float_sigma_equals_per_image_sigma(method):
    den, x = fitted(method), tiny_images(4, SHAPE, seed=4)
    torch.testing.assert_close(den(x, 0.7), den(x, torch.full((4,), 0.7, dtype=torch.float64)))
    torch.testing.assert_close(den(x, torch.tensor(0.7)), den(x, 0.7))


def test_batch_invariance(method):
    den, x = fitted(method), tiny_images(7, SHAPE, seed=5)
    sigma = torch.tensor([0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0], dtype=torch.float64)
    whole = den(x, sigma)
    parts = torch.cat([den(x[:3], sigma[:3]), den(x[3:4], sigma[3:4]), den(x[4:], sigma[4:])])
    torch.testing.assert_close(whole, parts, rtol=1e-12, atol=1e-12)


def test_chunk_size_invariance(method):
    x = tiny_images(5, SHAPE, seed=6)
    outs = [fitted(method, **{CHUNK_PARAM: c})(x, 0.4) for c in (1, 5, 1000)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], rtol=1e-12, atol=1e-12)


def test_score_and_eps_consistent_with_denoise(method):
    den, x = fitted(method), tiny_images(3, SHAPE, seed=7)
    sigma = torch.tensor([0.2, 1.0, 4.0], dtype=torch.float64)
    d, s4 = den(x, sigma), sigma.reshape(3, 1, 1, 1)
    torch.testing.assert_close(den.score(x, sigma), (d - x) / s4**2)
    torch.testing.assert_close(den.eps(x, sigma), (x - d) / s4)


def test_save_load_round_trip(method, tmp_path):
    den, x = fitted(method), tiny_images(3, SHAPE, seed=8)
    den.save(tmp_path / "den.h5")
    back = ad.load(tmp_path / "den.h5")
    assert type(back) is type(den) and back.get_params() == den.get_params()
    for name in ("image_shape_", "n_samples_seen_", "value_range_", "fingerprint_"):
        assert getattr(back, name) == getattr(den, name)
    assert torch.equal(back(x, 0.3), den(x, 0.3))


@pytest.mark.parametrize("bad, match", [
    (float("nan"), "NaN"), (float("inf"), "NaN or Inf"), (0.0, "positive"), (-1.0, "positive"),
    (torch.ones(5), r"shape \(3,\)"), (1e-200, "too small"),
])
def test_bad_sigma_raises(method, bad, match):
    with pytest.raises(ValueError, match=match):
        fitted(method)(tiny_images(3, SHAPE), bad)


def test_bad_x_raises(method):
    den = fitted(method)
    x = tiny_images(2, SHAPE)
    x[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        den(x, 1.0)
    with pytest.raises(ValueError, match=r"fitted on images of shape \(1, 6, 6\)"):
        den(tiny_images(2, (3, 6, 6)), 1.0)
    with pytest.raises(ValueError, match=r"fitted on images of shape"):
        den(tiny_images(2, (1, 5, 6)), 1.0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        den(torch.zeros(2, 36, dtype=torch.float64), 1.0)
    with pytest.raises(ValueError, match="uint8"):
        den(torch.zeros(2, 1, 6, 6, dtype=torch.uint8), 1.0)


def test_bad_training_data_raises(method):
    with pytest.raises(ValueError, match="empty"):
        make(method).fit(torch.zeros(0, 1, 6, 6))
    X = tiny_images(4, SHAPE)
    X[1, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        make(method).fit(X)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        make(method).fit(np.zeros((4, 36)))
