"""Mergeable sufficient statistics of image sets: count, mean and scatter matrix, in float64.

``moments(X)`` summarises a batch; ``merge_moments(a, b)`` combines two summaries exactly
(Chan, Golub & LeVeque 1979), so a fit can be split over chunks, processes or machines and
combined afterwards with the same result as one pass over all the data.
"""

from typing import NamedTuple

import torch


class Moments(NamedTuple):
    """Sufficient statistics of a set of flattened images.

    count : int
    mean : Tensor of shape (d,), float64
    scatter : Tensor of shape (d, d), float64, ``sum_i (x_i - mean)(x_i - mean)^T``
    """

    count: int
    mean: torch.Tensor
    scatter: torch.Tensor

    def covariance(self, ddof=0):
        """Covariance ``scatter / (count - ddof)``; ddof=0 gives the data's own second moments."""
        if self.count - ddof <= 0:
            raise ValueError(f"covariance with ddof = {ddof} needs at least {ddof + 1} samples, have {self.count}")
        return self.scatter / (self.count - ddof)


def moments(X, chunk_size=4096):
    """Count, mean and scatter of ``X`` accumulated in float64, chunk by chunk.

    Parameters
    ----------
    X : Tensor of shape (N, ...)
        Flattened to (N, d) with d the product of the trailing dimensions.
    chunk_size : int
        Rows converted to float64 at a time (bounds the extra memory to chunk_size * d).

    Returns
    -------
    Moments
    """
    X = X.reshape(X.shape[0], -1)
    total = None
    for start in range(0, X.shape[0], chunk_size):
        chunk = X[start:start + chunk_size].to(torch.float64)
        mean = chunk.mean(0)
        centred = chunk - mean
        part = Moments(chunk.shape[0], mean, centred.T @ centred)  # scatter: (d, d)
        total = part if total is None else merge_moments(total, part)
    return total


def merge_moments(a, b):
    """Exact moments of the union of two sets from their moments (Chan et al. update).

    ``mean = mean_a + delta * n_b / n`` and
    ``scatter = scatter_a + scatter_b + delta delta^T * n_a n_b / n`` with
    ``delta = mean_b - mean_a``.
    """
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"cannot merge moments of dimension {a.mean.shape} and {b.mean.shape}")
    n = a.count + b.count
    b_mean, b_scatter = b.mean.to(a.mean.device), b.scatter.to(a.mean.device)
    delta = b_mean - a.mean
    mean = a.mean + delta * (b.count / n)
    scatter = a.scatter + b_scatter + torch.outer(delta, delta) * (a.count * b.count / n)
    return Moments(n, mean, scatter)
