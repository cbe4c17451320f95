"""The streaming softmax that every softmax denoiser reduces its logits with, against a float64 loop."""

import math

import pytest
import torch

from analytic_denoisers.kernels.softmax import (StreamingSoftmax, floored_weights, log_weight_floor, resolve_chunk,
                                                softmax_average)
from references import randn


def softmax_mean_reference(logits, values):
    """``sum_i softmax_i(logits_i) values_i`` per query, with explicit loops in float64."""
    out = []
    for row in logits.double().tolist():
        top = max(row)
        weights = [math.exp(v - top) for v in row]
        total = sum(weights)
        out.append([sum(w * float(v[j]) for w, v in zip(weights, values.double())) / total
                    for j in range(values.shape[1])])
    return torch.tensor(out, dtype=torch.float64)


def stream(logits, values, chunk, **kwargs):
    """The accumulator fed ``chunk`` candidates at a time, values with a column of ones."""
    acc = StreamingSoftmax((logits.shape[0], 1), logits.dtype, logits.device, **kwargs)
    fused = torch.cat([values, values.new_ones(len(values), 1)], 1)
    for start in range(0, logits.shape[1], chunk):
        block = fused[start:start + chunk]
        acc.add(logits[:, start:start + chunk].clone(), 1, lambda w: w @ block)
    return acc


@pytest.mark.parametrize("scale", [1e-2, 1.0, 1e3, 1e5])
@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_matches_the_loop_reference_for_any_chunking(scale, chunk):
    logits, values = scale * randn(4, 23, seed=1), randn(23, 3, seed=2)
    expect = softmax_mean_reference(logits, values)
    torch.testing.assert_close(stream(logits, values, chunk).mean(), expect, rtol=1e-12, atol=1e-12)


def test_the_three_layouts_and_the_log_normaliser():
    logits, values = 30 * randn(3, 11, seed=3), randn(11, 2, seed=4)
    expect_mean = softmax_mean_reference(logits, values)
    expect_log = torch.logsumexp(logits, 1, keepdim=True)
    fused = stream(logits, values, 4)  # values with a column of ones, one product
    pair = StreamingSoftmax((3, 1), torch.float64, "cpu", layout="pair")  # as LS and PCA-locality use it
    weights = StreamingSoftmax((3, 1), torch.float64, "cpu", layout="weights")  # as PSPC's first pass
    for start in range(0, 11, 4):
        block = values[start:start + 4]
        pair.add(logits[:, start:start + 4].clone(), 1, lambda w: (w @ block, w.sum(1, keepdim=True)))
        weights.add(logits[:, start:start + 4].clone(), 1, lambda w: w.sum(1, keepdim=True))
    for acc in (fused, pair):
        torch.testing.assert_close(acc.mean(), expect_mean, rtol=1e-12, atol=1e-12)
    for acc in (fused, pair, weights):
        torch.testing.assert_close(acc.log_normaliser(), expect_log, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="holds no numerator"):
        weights.mean()
    with pytest.raises(ValueError, match="gave 1 sums for the 'pair' layout"):
        pair.add(logits[:, :2].clone(), 1, lambda w: w @ values[:2])
    with pytest.raises(ValueError, match="layout must be one of"):
        StreamingSoftmax((3, 1), torch.float64, "cpu", layout="split")


def test_rows_fold_a_block_into_some_queries_only():
    logits, values = 5 * randn(4, 9, seed=5), randn(9, 2, seed=6)
    fused = torch.cat([values, torch.ones(9, 1, dtype=torch.float64)], 1)
    acc = StreamingSoftmax((4, 1), torch.float64, "cpu")
    acc.add(logits[:, :5].clone(), 1, lambda w: w @ fused[:5])  # every query sees candidates 0-4
    rows = torch.tensor([0, 2])
    acc.add(logits[rows, 5:].clone(), 1, lambda w: w @ fused[5:], rows=rows)  # queries 0, 2 also 5-8
    out = acc.mean()
    torch.testing.assert_close(out[rows], softmax_mean_reference(logits[rows], values), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[[1, 3]], softmax_mean_reference(logits[[1, 3], :5], values[:5]),
                               rtol=1e-12, atol=1e-12)


def test_weights_floored_at_a_normal_float_and_float32_weights():
    floor = log_weight_floor(torch.float32)
    assert torch.finfo(torch.float32).tiny < math.exp(floor) < 1e-24  # far below rounding, above subnormals
    w = floored_weights(torch.tensor([0.0, -1.0, -1e4], dtype=torch.float64), torch.tensor(0.0), floor, torch.float32)
    assert w.dtype == torch.float32 and math.isclose(float(w[2]), math.exp(floor), rel_tol=1e-6)
    # float64 logits, float32 weights (the window kernels): within float32 rounding of the reference
    logits, values = 300 * randn(3, 10, seed=7), randn(10, 2, seed=8)
    acc = stream(logits, values.float(), 4, weight_dtype=torch.float32)
    torch.testing.assert_close(acc.mean(), softmax_mean_reference(logits, values), rtol=1e-6, atol=1e-6)


def test_gradients_flow_to_the_queries_and_logits_are_kept_for_them():
    keys, values = randn(6, 3, seed=9), randn(6, 2, seed=10)
    q = randn(2, 3, seed=11).requires_grad_(True)
    fused = torch.cat([values, torch.ones(6, 1, dtype=torch.float64)], 1)

    def through_softmax(q):
        return softmax_average(q, keys, fused, chunk=4)

    def plain(q):
        return torch.softmax(q @ keys.T, 1) @ values

    assert torch.autograd.gradcheck(through_softmax, (q,))
    torch.testing.assert_close(torch.autograd.functional.jacobian(through_softmax, q),
                               torch.autograd.functional.jacobian(plain, q), rtol=1e-10, atol=1e-10)


def test_the_one_chunk_rule():
    assert resolve_chunk(None, 100, 2**19, minimum=512) == 2**19 // 100
    assert resolve_chunk(None, 10**6, 2**19, minimum=512) == 512
    assert resolve_chunk(None, 0, 2**20) == 2**20
    assert resolve_chunk(7, 100, 2**19) == 7
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            resolve_chunk(bad, 1, 16)
