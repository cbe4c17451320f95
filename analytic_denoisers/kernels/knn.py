"""The kNN score estimators: the empirical posterior mean from each query's nearest training
images and a random sample of the others (Niedoba et al., arXiv 2402.08018).

The empirical posterior mean ``D(x) = sum_i w_i x_i / sum_i w_i``, ``w_i = exp(l_i)``,
``l_i = -||x - x_i||^2 / (2 sigma^2)``, is dominated by the images nearest to ``x``. Both
estimators find each query's k nearest training images K (:func:`exact_neighbours`, or any index
passed as ``neighbours``: it only chooses the set, every weight is recomputed exactly in the dtype
of ``x``) and estimate the rest of the sum by self-normalised importance sampling:

* :func:`knn_posterior_mean` (exact neighbours, sampled tail): the images of K with their exact
  weights, plus n images S drawn uniformly without replacement from the other N - k, each standing
  for (N - k) / n of them::

      D_hat(x) = (sum_{i in K} w_i x_i + (N - k)/n sum_{j in S} w_j x_j)
                 / (sum_{i in K} w_i + (N - k)/n sum_{j in S} w_j).

  It is exact when k + n >= N (S is then the whole tail, each standing for itself).
* :func:`knn_proposal_posterior_mean` (the paper's estimator, as in its published code): n draws
  ``i_1 .. i_n`` with replacement from the proposal ``q(i) ~ w_i`` on K and ``q(j) ~ w_(k)`` off K
  (``w_(k)``, the weight of the k-th neighbour, bounds every other weight), i.e. the mixture of a
  uniform draw over all N images (probability ``N w_(k) / Z``, ``Z = sum_K w_i + (N - k) w_(k)``)
  and a draw from K with probabilities ``~ w_i - w_(k)``; then
  ``D_hat(x) = sum_r (w_{i_r} / q(i_r)) x_{i_r} / sum_r w_{i_r} / q(i_r)``: a drawn neighbour counts
  1 and a drawn tail image ``exp(l_j - l_(k)) <= 1``. Even with k >= N it is a Monte Carlo average
  of n posterior draws, not the exact mean.

The first sums the paper's neighbour part exactly instead of sampling it, so it has less variance
for the same n and is exact in the limit. With k < N both are approximations: biased for finite n
(self-normalised), consistent as n grows. The randomness is common to all queries, so that a
query's result does not depend on its batch: one permutation of the training images (a query's
tail is the first n images of it that are not in its K), or one table of uniforms for the paper's
n draws (draw r is uniform when ``u_r < N w_(k) / Z``, image ``floor(t_r N)``; else the neighbour
where ``v_r`` falls in the cumulative ``w_i - w_(k)`` over K in index order).
"""

import math

import torch

from ..core.batching import query_block
from ..core.validation import Interval, as_images, as_sigma, check_data, check_scalar
from .empirical import BLOCK_ELEMENTS, augment_queries, checked_prepared, prepare, running_top_k
from .softmax import StreamingSoftmax, resolve_chunk

MIN_CHUNK = 512  # training images per chunk of the exact search, at least
DIFFERENCE_ELEMENTS = 2**21  # size of one block of query - image differences (measured: 10x faster than one block)


def exact_neighbours(queries, data, k, chunk_size=None, *, prepared=None):
    """Indices of each query's ``k`` nearest training images (Euclidean distance), by brute force.

    Chunks of training images are scored with one matrix product each, ``(x - c).(x_i - c) -
    ||x_i - c||^2 / 2`` (``c`` the data mean: :func:`~.empirical.prepare`), and a running top-k
    keeps the best; queries go in blocks of bounded memory. Computed in the dtype of the queries
    (in float32, rounding may swap neighbours whose distances agree to about 1e-7).

    Parameters
    ----------
    queries : Tensor of shape (B, d) or (B, C, H, W)
    data : Tensor of shape (M, d) or (M, C, H, W), in the dtype and on the device of ``queries``;
        None with ``prepared``
    k : int, the number of neighbours (more than M gives all M)
    chunk_size : int, optional
        Training images per chunk (default: a score block of about 2**19 elements). Changes
        nothing but the order of ties.
    prepared : Prepared, optional, ``prepare(data)`` precomputed to reuse across calls

    Returns
    -------
    LongTensor of shape (B, min(k, M)), nearest first. Not differentiable (piecewise constant).
    """
    queries = queries.reshape(len(queries), -1)
    aug, center = checked_prepared(queries, data, prepared)  # (M, d + 2), (d,)
    k = min(check_scalar(k, "k", Interval(int, 1)), len(aug))
    chunk = MIN_CHUNK if chunk_size is None else check_scalar(chunk_size, "chunk_size", Interval(int, 1))
    block = query_block((k + chunk) * 2 * (queries.element_size() + 8))  # candidate scores and indices
    with torch.no_grad():
        return torch.cat([_nearest(queries[i:i + block], aug, center, k, chunk_size)
                          for i in range(0, len(queries), block)])


def _nearest(queries, aug, center, k, chunk_size):
    """The running top-k of :func:`exact_neighbours` for one block of queries."""
    chunk = resolve_chunk(chunk_size, len(queries), BLOCK_ELEMENTS, minimum=MIN_CHUNK)
    aug_q = augment_queries(queries, center, queries.new_ones(len(queries)))  # (B, d + 2)
    return running_top_k(aug_q, aug, k, chunk)[1]


def knn_posterior_mean(x, sigma, data, *, k, n_tail, tail_order, neighbours=None, chunk_size=None):
    """kNN estimate of the empirical posterior mean: exact neighbours, a uniform sample of the tail.

    ``D_hat(x) = (sum_{i in K} w_i x_i + (N-k)/n sum_{j in S} w_j x_j) / (sum_{i in K} w_i +
    (N-k)/n sum_{j in S} w_j)``, ``w_i = exp(-||x - x_i||^2 / (2 sigma^2))``: K the k nearest
    training images, S the first n images of ``tail_order`` that are not in K (see the module
    docstring). Approximate for k + n < N (self-normalised importance sampling of the tail:
    consistent, not unbiased); exact when k + n >= N. Computed in log space with a per-query
    running maximum, so nothing underflows at small sigma; queries go in blocks of bounded memory.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W) or (B, d)
    sigma : float or Tensor of shape (B,)
    data : Tensor of shape (N, C, H, W) or (N, d), in the dtype and on the device of ``x``
    k : int, neighbours per query (more than N: all N, the exact posterior mean)
    n_tail : int >= 0, tail images per query (more than N - k: the whole tail, exact)
    tail_order : LongTensor of shape (N,), a permutation of ``range(N)`` (e.g. ``torch.randperm(N,
        generator=...)``): the same for every query, so that the result does not depend on the batch
    neighbours : callable ``(queries (B, d), k) -> LongTensor (B, k)``, optional
        Indices of each query's k nearest images (any index, e.g. FAISS); it only chooses the set,
        in any order. Default: :func:`exact_neighbours`.
    chunk_size : int, optional, training images per chunk of the default exact search

    Returns
    -------
    Tensor of the shape, dtype and device of ``x``. Differentiable with respect to ``x`` through
    the weights (the choice of K and S is piecewise constant) when autograd is on.
    """
    x, sigma, queries, flat, search = _inputs(x, sigma, data, neighbours, chunk_size)
    m = len(flat)
    k = min(check_scalar(k, "k", Interval(int, 1)), m)
    n = min(check_scalar(n_tail, "n_tail", Interval(int, 0)), m - k)
    order = _check_permutation(tail_order, m, x.device)
    prefix = order[:k + n]  # holds at least n images outside any K
    log_mult = torch.cat([x.new_zeros(k), x.new_full((n,), math.log((m - k) / n) if n else 0.0)])  # (k + n,)
    # the gathered images, their differences and the weighted sum: about five (k + n, d) blocks per
    # query at the peak (measured: 392 MiB for 214 queries of k = n = 100 at d = 784 with two assumed)
    block = query_block(5 * (k + n) * flat.shape[1] * x.element_size())
    out = []
    for i in range(0, len(queries), block):
        q, s = queries[i:i + block], sigma[i:i + block]
        near = _neighbour_sets(search, q, k, m)  # (B, k), sorted
        tail = _first_outside(prefix, near, n)  # (B, n)
        logits, values = _logits(q, s, flat, torch.cat([near, tail], 1))  # (B, k + n), (B, k + n, d)
        out.append(_self_normalised_mean(logits + log_mult, values))
    return torch.cat(out).reshape(x.shape)


def knn_proposal_posterior_mean(x, sigma, data, *, k, draws, neighbours=None, chunk_size=None):
    """Niedoba et al.'s kNN estimate: n draws from the nearest-neighbour proposal, self-normalised.

    The proposal over the N training images is ``q(i) ~ w_i`` on the k nearest K and ``~ w_(k)``
    (the k-th neighbour's weight) off K; the estimate is ``sum_r (w_{i_r} / q(i_r)) x_{i_r} /
    sum_r (w_{i_r} / q(i_r))`` over the n draws ``i_r`` (arXiv 2402.08018; its published code).
    Approximate for any k (a Monte Carlo average even for k >= N); consistent as n grows.

    Parameters
    ----------
    x : Tensor of shape (B, C, H, W) or (B, d)
    sigma : float or Tensor of shape (B,)
    data : Tensor of shape (N, C, H, W) or (N, d), in the dtype and on the device of ``x``
    k : int, neighbours per query (more than N: all N)
    draws : Tensor of shape (n, 3), uniforms in [0, 1): ``(u_r, v_r, t_r)`` decide draw r for every
        query (see the module docstring), e.g. ``torch.rand(n, 3, generator=..., dtype=torch.float64)``
    neighbours : callable ``(queries (B, d), k) -> LongTensor (B, k)``, optional; default
        :func:`exact_neighbours`
    chunk_size : int, optional, training images per chunk of the default exact search

    Returns
    -------
    Tensor of the shape, dtype and device of ``x``. Differentiable with respect to ``x`` with the
    draws held fixed: only drawn tail images' weights depend on ``x`` (a drawn neighbour's
    ``w / q`` is constant), so the gradient is zero where no tail image was drawn.
    """
    x, sigma, queries, flat, search = _inputs(x, sigma, data, neighbours, chunk_size)
    m = len(flat)
    k = min(check_scalar(k, "k", Interval(int, 1)), m)
    if not (isinstance(draws, torch.Tensor) and draws.dim() == 2 and draws.shape[0] >= 1 and draws.shape[1] == 3
            and draws.is_floating_point() and bool(((draws >= 0) & (draws < 1)).all())):
        got = f"shape {tuple(draws.shape)}, {draws.dtype}" if isinstance(draws, torch.Tensor) else type(draws).__name__
        raise ValueError(f"draws must be a float tensor of shape (n, 3), n >= 1, of uniforms in [0, 1); got {got}")
    draws = draws.to(device=x.device, dtype=torch.float64)
    n = len(draws)
    block = query_block(5 * (k + n) * flat.shape[1] * x.element_size())  # as in knn_posterior_mean
    out = []
    for i in range(0, len(queries), block):
        q, s = queries[i:i + block], sigma[i:i + block]
        near = _neighbour_sets(search, q, k, m)  # (B, k), sorted
        near_logits, _ = _logits(q, s, flat, near)  # (B, k)
        drawn = _proposal_draws(near_logits.detach(), near, draws, m)  # (B, n)
        logits, values = _logits(q, s, flat, drawn)  # (B, n), (B, n, d)
        kth = near_logits.min(1, keepdim=True).values  # (B, 1), l_(k)
        # log(w / q) up to a per-query constant: 0 for a neighbour, l_j - l_(k) for a tail image
        log_ratio = torch.where(_rows_contain(near, drawn), torch.zeros_like(logits), logits - kth)
        out.append(_self_normalised_mean(log_ratio, values))
    return torch.cat(out).reshape(x.shape)


# -- shared steps ---------------------------------------------------------------------------------


def _inputs(x, sigma, data, neighbours, chunk_size):
    """Validated ``(x, sigma (B,), queries (B, d), data (N, d), neighbour search)``."""
    x = as_images(x, flat=True)
    flat = check_data(data, x).reshape(len(data), -1)
    sigma = as_sigma(sigma, x)
    if neighbours is None:
        prepared = prepare(flat)  # once per call, shared by the query blocks
        neighbours = lambda q, k: exact_neighbours(q, None, k, chunk_size, prepared=prepared)  # noqa: E731
    elif not callable(neighbours):
        raise ValueError(f"neighbours must be a callable (queries, k) -> indices, got {type(neighbours).__name__}")
    return x, sigma, x.reshape(len(x), -1), flat, neighbours


def _check_permutation(order, m, device):
    if not (isinstance(order, torch.Tensor) and order.dtype == torch.long and tuple(order.shape) == (m,)):
        got = (f"{order.dtype} of shape {tuple(order.shape)}" if isinstance(order, torch.Tensor)
               else type(order).__name__)
        raise ValueError(f"tail_order must be a LongTensor of shape ({m},) (a permutation of the training images), "
                         f"got {got}")
    order = order.to(device)
    if not torch.equal(order.sort().values, torch.arange(m, device=device)):
        raise ValueError(f"tail_order must be a permutation of range({m})")
    return order


def _neighbour_sets(search, queries, k, m):
    """``search(queries, k)``, validated: (B, k) distinct indices in [0, m), sorted by index (so that
    what follows does not depend on the order in which an index returns them)."""
    with torch.no_grad():
        found = search(queries.detach(), k)
    found = torch.as_tensor(found, device=queries.device)
    if tuple(found.shape) != (len(queries), k) or found.is_floating_point() or found.dtype == torch.bool:
        raise ValueError(f"neighbours must return integer indices of shape ({len(queries)}, {k}), got "
                         f"{found.dtype} of shape {tuple(found.shape)}")
    found = found.long().sort(1).values
    if bool((found[:, 0] < 0).any() | (found[:, -1] >= m).any() | (found[:, 1:] == found[:, :-1]).any()):
        raise ValueError(f"neighbours must return distinct indices in [0, {m}) for each query")
    return found


def _rows_contain(sets, values):
    """``values[b, j] in sets[b]`` for sorted ``sets`` (B, k) and any ``values`` (B, L): bool (B, L)."""
    pos = torch.searchsorted(sets, values.contiguous()).clamp(max=sets.shape[1] - 1)
    return sets.gather(1, pos) == values


def _first_outside(prefix, near, n):
    """Per row, the first ``n`` entries of ``prefix`` (L,) that are not in ``near`` (B, k): (B, n)."""
    if n == 0:
        return near.new_empty(len(near), 0)
    inside = _rows_contain(near, prefix.expand(len(near), -1))  # (B, L)
    first = torch.argsort(inside.to(torch.uint8), dim=1, stable=True)[:, :n]  # outside ones, in prefix order
    return prefix[first]


def _logits(queries, sigma, data, idx):
    """Exact ``-||q_b - x_idx[b, j]||^2 / (2 sigma_b^2)`` (B, m) from direct differences (not the
    expanded form, which cancels at small sigma), and the images (B, m, d)."""
    values = data.index_select(0, idx.reshape(-1)).reshape(*idx.shape, -1)  # (B, m, d)
    step = max(1, DIFFERENCE_ELEMENTS // values[:, :1].numel())  # candidates per cache-sized block of differences
    distances = torch.cat([(values[:, j:j + step] - queries[:, None]).square().sum(-1)  # (B, step)
                           for j in range(0, values.shape[1], step)], 1)  # (B, m)
    return distances / (-2 * sigma.square())[:, None], values


def _self_normalised_mean(log_weights, values):
    """``sum_j softmax_j(log_weights) values_j`` per query (B, d), with a running maximum."""
    acc = StreamingSoftmax((len(values), 1), log_weights.dtype, log_weights.device, layout="pair")
    acc.add(log_weights, 1, lambda w: (torch.einsum("bm,bmd->bd", w, values), w.sum(1, keepdim=True)))
    return acc.mean(values.dtype)


def _proposal_draws(near_logits, near, draws, m):
    """The n draws of every query from its nearest-neighbour proposal: (B, n) image indices.

    near_logits, near : (B, k) logits and indices (sorted) of the neighbours; draws : (n, 3) uniforms
    """
    k = near.shape[1]
    p = torch.exp((near_logits - near_logits.amax(1, keepdim=True)).double())  # (B, k) w_i / max w
    kth = p.amin(1, keepdim=True)  # (B, 1) w_(k) / max w
    uniform_mass = m * kth / (p.sum(1, keepdim=True) + (m - k) * kth)  # (B, 1) N w_(k) / Z
    cdf = torch.cumsum(p - kth, 1)  # (B, k) the neighbour part, unnormalised
    u, v, t = draws.T  # (n,) each
    pos = torch.searchsorted(cdf, (v * cdf[:, -1:]).contiguous(), right=True).clamp(max=k - 1)  # (B, n)
    uniform = (t * m).long().clamp(max=m - 1)  # (n,) the same uniform images for every query
    return torch.where(u < uniform_mass, uniform.expand(len(near), -1), near.gather(1, pos))
