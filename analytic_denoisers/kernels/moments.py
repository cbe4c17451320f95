"""Mergeable sufficient statistics of image sets: count, mean and scatter matrix, in float64.

``moments(X)`` summarises a batch; ``merge_moments(a, b)`` combines two summaries exactly
(Chan, Golub & LeVeque 1979), so a fit can be split over chunks, processes or machines and
combined afterwards with the same result as one pass over all the data.
:func:`dask_statistics` does that over the blocks of a ``dask.array`` (out of core, on any Dask
scheduler; ``dask`` is an optional extra).
"""

from typing import NamedTuple

import numpy as np
import torch

from ..core.fingerprint import data_summary, merge_summaries
from ..core.validation import as_images


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


def is_dask_array(X):
    """Whether ``X`` is a ``dask.array.Array`` (duck-typed: dask is not imported)."""
    return hasattr(X, "__dask_graph__") and hasattr(X, "to_delayed")


def _block_statistics(block, chunk_size, labels=None):
    """Moments, data summary and moments per label (a dict, empty without ``labels``) of one block
    of images (validated: NaN, shape), or None if it is empty."""
    if len(block) == 0:
        return None
    images = as_images(np.asarray(block), name="X (a block of the dask array)")
    groups = {} if labels is None else {
        value.item(): moments(images[torch.from_numpy(labels == value)], chunk_size) for value in np.unique(labels)}
    return moments(images, chunk_size), data_summary(images), groups


def _merge_statistics(a, b):
    if a is None or b is None:
        return b if a is None else a
    groups = dict(a[2])
    for key, value in b[2].items():
        groups[key] = merge_moments(groups[key], value) if key in groups else value
    return merge_moments(a[0], b[0]), merge_summaries(a[1], b[1]), groups


def dask_statistics(X, chunk_size=4096, scheduler=None, labels=None):
    """Moments and data summary of a ``dask.array`` of images, computed block by block by Dask.

    Each block of whole images (any chunking along the image dimensions is merged first) is
    summarised on a worker; the summaries are merged in a binary tree with :func:`merge_moments`
    and :func:`~analytic_denoisers.core.fingerprint.merge_summaries`, so the result equals
    ``moments(X)`` of the images in memory up to the order of the additions, and only one block
    per worker is ever in memory. With ``labels``, the moments of each label's images come from
    the same pass.

    Parameters
    ----------
    X : dask.array.Array of shape (N, C, H, W), floats
    chunk_size : int, rows converted to float64 at a time within a block
    scheduler : passed to ``dask.compute`` (``"threads"``, ``"processes"``, ``"synchronous"``);
        None: Dask's default, which is a ``dask.distributed.Client`` when one is active
    labels : array of shape (N,), optional, a label per image (then X's row chunks must be known)

    Returns
    -------
    (Moments, dict): the moments and the data summary (shape, count, value range, fingerprint);
    with ``labels``, a third item: {label: Moments}.
    """
    import dask

    if X.ndim != 4 or X.shape[0] == 0:
        raise ValueError(f"X must be a dask array of shape (N, C, H, W) with N >= 1, got shape {X.shape}")
    X = X.rechunk({1: -1, 2: -1, 3: -1})  # whole images per block
    rows = X.chunks[0]
    if labels is not None:
        labels = np.asarray(labels)
        if any(np.isnan(n) for n in rows) or labels.shape != (sum(rows),):
            raise ValueError(f"labels must be one per image of X (shape ({X.shape[0]},)) and X's row chunks known "
                             f"(X.compute_chunk_sizes()), got labels of shape {labels.shape}")
    offsets = np.concatenate([[0], np.cumsum(rows)]) if labels is not None else None
    parts = [dask.delayed(_block_statistics)(block, chunk_size,
                                             None if labels is None else labels[offsets[i]:offsets[i + 1]])
             for i, block in enumerate(X.to_delayed().ravel())]
    while len(parts) > 1:  # a binary tree of merges: no worker receives every summary
        parts = [dask.delayed(_merge_statistics)(*parts[i:i + 2]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    (total,) = dask.compute(parts[0], scheduler=scheduler)
    if total is None:  # rows of unknown count that turned out to be none
        raise ValueError("X is empty: its dask array holds no images")
    return total if labels is not None else total[:2]
