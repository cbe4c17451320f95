"""The kNN score estimator of Niedoba et al. (arXiv 2402.08018); the math is in
:mod:`analytic_denoisers.kernels.knn`. This module also holds the optional FAISS index, which
only chooses each query's neighbours."""

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ..core.compat import import_faiss
from ..core.contract import TrainingSetMixin
from ..core.validation import Interval, Options
from ..kernels.empirical import prepare
from ..kernels.knn import exact_neighbours, knn_posterior_mean, knn_proposal_posterior_mean

INDEXES = ("auto", "exact", "faiss")
SAMPLINGS = ("tail", "proposal")
_FAISS_KEY = torch.empty(0)  # the FAISS index is a CPU float32 copy: one per class, whatever x is


class KNNScoreDenoiser(TrainingSetMixin, BaseEstimator):
    """Nearest-neighbour estimate of the empirical posterior mean (Niedoba et al., arXiv 2402.08018).

    The exact empirical posterior mean ``D(x) = sum_i w_i x_i / sum_i w_i``, ``w_i = exp(-||x -
    x_i||^2 / (2 sigma^2))`` (:class:`~analytic_denoisers.EmpiricalOptimalDenoiser`) costs a pass over
    all N training images per query. This estimator looks only at each query's ``n_neighbors``
    nearest images K and ``n_draws`` random ones, by self-normalised importance sampling.
    **Approximate** when ``n_neighbors < N``: not unbiased, consistent as ``n_draws`` grows.

    * ``sampling="tail"`` (default): K with their exact weights plus n images S drawn uniformly
      without replacement from the other N - k, each weighted ``(N - k) / n``:
      ``D_hat = (sum_K w_i x_i + (N-k)/n sum_S w_j x_j) / (sum_K w_i + (N-k)/n sum_S w_j)``.
      Exact when ``n_neighbors + n_draws >= N``
      (:func:`~analytic_denoisers.kernels.knn.knn_posterior_mean`).
    * ``sampling="proposal"``: the paper's estimator as published: n draws with replacement from
      the proposal ``q ~ w_i`` on K, ``~ w_(k)`` (the k-th neighbour's weight) elsewhere, weighted
      ``w / q``. A Monte Carlo average even for ``n_neighbors >= N``, and piecewise constant in
      ``x`` where no tail image is drawn (zero Jacobian)
      (:func:`~analytic_denoisers.kernels.knn.knn_proposal_posterior_mean`).

    The random images are common to all queries (drawn from ``random_state``), so a query's result
    does not depend on its batch, and the estimate is a deterministic function of ``x``.

    Parameters
    ----------
    n_neighbors : int, default 100
        k, the nearest training images per query (of its class when fitted with labels).
    n_draws : int, default 100
        n, the random images per query: tail images (``sampling="tail"``, may be 0) or draws from
        the proposal (``sampling="proposal"``, at least 1).
    sampling : "tail" or "proposal", default "tail"
        The estimator, as above.
    index : "exact", "faiss" or "auto", default "exact"
        How the neighbours are found: "exact", brute force in the dtype of ``x`` (chunked matrix
        products with a running top-k); "faiss", a ``faiss.IndexFlatL2`` (exact search in float32,
        built on first use and cached, not saved; needs ``pip install "analytic-denoisers[faiss]"``);
        "auto", FAISS when it is installed, else exact. The index only chooses the neighbours: their
        weights are recomputed exactly in the dtype of ``x``. "exact" is the default so that
        results do not depend on what is installed (float32 search may order near-ties differently).
    random_state : int, default 0
        Seed of the random images: ``fit`` draws the permutation ``tail_order_`` and the proposal's
        uniforms ``draws_`` (``torch.rand((n_draws, 3))``) from it; like every random choice of
        the package's estimators, a new value takes effect at the next ``fit``.
    chunk_size : int, optional
        Training images per chunk of the exact search (default: adapts to the batch). Changes
        nothing but the order of ties.

    Attributes
    ----------
    tail_order_ : LongTensor of shape (N,)
        A permutation of the training images; a query's tail S is the first ``n_draws`` images of
        it (of its class) that are not among its neighbours.
    draws_ : Tensor of shape (n_draws, 3), float64, the proposal's uniforms (``sampling="proposal"``)
    data_ : Tensor of shape (N, C, H, W)
        The training images (float64 kept, others as float32), sorted by class when fitted with
        labels.
    labels_, classes_, class_offsets_ : the labels, distinct classes and class boundaries, or
        None; with labels, ``denoise`` needs ``y`` and uses only that class's images.
    image_shape_, n_samples_seen_, value_range_, fingerprint_ : see DenoiserMixin.
    """

    _parameter_constraints = {
        "n_neighbors": [Interval(int, 1)],
        "n_draws": [Interval(int, 0)],
        "sampling": [Options(*SAMPLINGS)],
        "index": [Options(*INDEXES)],
        "random_state": [Interval(int, 0, 2**63 - 1)],
        "chunk_size": [Interval(int, 1), None],
    }
    _fitted_state = TrainingSetMixin._fitted_state + ("tail_order_", "draws_")

    def __init__(self, n_neighbors=100, n_draws=100, sampling="tail", index="exact", random_state=0,
                 chunk_size=None):
        self.n_neighbors = n_neighbors
        self.n_draws = n_draws
        self.sampling = sampling
        self.index = index
        self.random_state = random_state
        self.chunk_size = chunk_size

    def _check_params(self, params=None):
        params = self.get_params(deep=False) if params is None else params
        super()._check_params(params)
        if params["sampling"] == "proposal" and params["n_draws"] == 0:
            raise ValueError("KNNScoreDenoiser: n_draws must be at least 1 with sampling='proposal', got n_draws=0")

    def fit(self, X, y=None):
        """Store the training images ``X`` (N, C, H, W) and optional labels ``y`` (N,), and draw
        ``tail_order_`` from ``random_state``. Returns self."""
        super().fit(X, y)
        if self.index == "faiss":
            import_faiss()  # missing: say so now, not at the first denoise
        generator = torch.Generator().manual_seed(int(self.random_state))
        self.tail_order_ = torch.randperm(len(self.data_), generator=generator)
        generator = torch.Generator().manual_seed(int(self.random_state))
        self.draws_ = torch.rand((self.n_draws, 3), generator=generator, dtype=torch.float64)
        return self

    def _denoise(self, x, sigma, y):
        faiss = None if self.index == "exact" else import_faiss(required=self.index == "faiss")

        def posterior_mean(x, sigma, bounds):  # one class (or all of the data)
            lo, hi = bounds
            data = self._fitted_on("data_", x)[lo:hi]
            search = self._neighbour_search(faiss, x, data, bounds)
            if self.sampling == "proposal":
                if len(self.draws_) != self.n_draws:
                    raise ValueError(f"KNNScoreDenoiser was fitted with n_draws={len(self.draws_)}, now "
                                     f"n_draws={self.n_draws}: call fit again (its draws are made at fit)")
                draws = self._fitted_on("draws_", torch.empty(0, dtype=torch.float64, device=x.device))
                return knn_proposal_posterior_mean(x, sigma, data, k=self.n_neighbors, draws=draws, neighbours=search)
            order = self._derived(("tail_order", *bounds), x, lambda: self._class_order(lo, hi).to(x.device))
            return knn_posterior_mean(x, sigma, data, k=self.n_neighbors, n_tail=self.n_draws, tail_order=order,
                                      neighbours=search)

        return self._by_class(x, sigma, y, posterior_mean)

    def _class_order(self, lo, hi):
        """``tail_order_`` restricted to the images ``data_[lo:hi]`` (in its order), counted from lo."""
        order = self.tail_order_
        return order[(order >= lo) & (order < hi)] - lo

    def _neighbour_search(self, faiss, x, data, bounds):
        """``(queries, k) -> indices`` into ``data_[lo:hi]``: FAISS, or the exact search."""
        if faiss is None:
            prepared = self._derived(("prepared", *bounds), x, lambda: prepare(data))
            return lambda queries, k: exact_neighbours(queries, None, k, self.chunk_size, prepared=prepared)
        index = self._derived(("faiss", *bounds), _FAISS_KEY, lambda: _faiss_index(faiss, self.data_[slice(*bounds)]))

        def search(queries, k):
            _, found = index.search(np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32), k)
            return torch.from_numpy(found).to(queries.device)

        return search


def _faiss_index(faiss, images):
    """A ``faiss.IndexFlatL2`` holding ``images`` (M, ...) as float32 rows."""
    rows = np.ascontiguousarray(images.reshape(len(images), -1).numpy(), dtype=np.float32)
    index = faiss.IndexFlatL2(rows.shape[1])
    index.add(rows)
    return index
