"""Image-quality metrics (metrics) against explicit formulas, and their undefined cases."""

import math
import statistics

import numpy as np
import pytest
import torch

from analytic_denoisers import metrics


def test_metrics_against_explicit_formulas():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 1, 3, 4, generator=g), torch.randn(5, 1, 3, 4, generator=g)
    for i in range(5):
        x, r = a[i].flatten().double(), b[i].flatten().double()
        r2 = 1 - ((x - r) ** 2).sum() / ((r - r.mean()) ** 2).sum()
        pearson = torch.corrcoef(torch.stack([x, r]))[0, 1]
        assert metrics.r2(a, b)[i].item() == pytest.approx(r2.item(), rel=1e-12)
        d = len(r)  # Lukoianov et al.'s r²: the MSE over the unbiased variance, sum / (d - 1)
        unbiased = 1 - ((x - r) ** 2).mean() / (((r - r.mean()) ** 2).sum() / (d - 1))
        assert metrics.r2_unbiased(a, b)[i].item() == pytest.approx(unbiased.item(), rel=1e-12)
        assert metrics.r2_unbiased(a, b)[i].item() == pytest.approx(1 - (1 - r2.item()) * (d - 1) / d, rel=1e-12)
        assert metrics.pearson(a, b)[i].item() == pytest.approx(pearson.item(), rel=1e-10)
        assert metrics.mse(a, b)[i].item() == pytest.approx(((x - r) ** 2).mean().item(), rel=1e-12)
        assert metrics.explained_variance(a, b)[i].item() == pytest.approx(
            (1 - ((x - r) ** 2).sum() / (r**2).sum()).item(), rel=1e-12)
    summary = metrics.summarise(a[:4], b[:4])  # an even count: the median averages the middle two
    assert summary["pearson"] == pytest.approx(statistics.median(metrics.pearson(a[:4], b[:4]).tolist()))
    assert summary["r2"] == pytest.approx(statistics.mean(metrics.r2(a[:4], b[:4]).tolist()))
    for name in metrics.METRICS:  # the spread: quartiles as numpy's default (linear) interpolation gives them
        values = getattr(metrics, name)(a[:4], b[:4]).numpy()
        assert [summary[f"{name}_q25"], summary[f"{name}_q75"]] == pytest.approx(np.percentile(values, [25, 75]))


def test_quartiles_skip_nan():
    values = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [float("nan")] * 4 + [7.0], [float("nan")] * 5])
    q = metrics.quartiles(values, dim=1)
    assert q["median"][:2] == [3.0, 7.0] and q["q25"][0] == 2.0 and q["q75"][0] == 4.0
    assert math.isnan(q["median"][2])
    assert metrics.quartiles(values[0], dim=0) == {"q25": 2.0, "median": 3.0, "q75": 4.0}


def test_metrics_of_identical_and_constant_images():
    a = torch.randn(3, 1, 4, 4)
    same = {"r2": 1.0, "r2_unbiased": 1.0, "pearson": 1.0, "mse": 0.0, "explained_variance": 1.0}
    assert metrics.summarise(a, a) == pytest.approx(
        {**same, **{f"{k}_{q}": v for k, v in same.items() for q in ("q25", "q75")}}, abs=1e-15)
    constant = torch.ones(3, 1, 4, 4)
    assert torch.isnan(metrics.r2(a, constant)).all() and torch.isnan(metrics.pearson(a, constant)).all()
    assert torch.isnan(metrics.r2_unbiased(a, constant)).all()
    with pytest.raises(ValueError, match="same shape"):
        metrics.mse(a, a[:, :, :2])
