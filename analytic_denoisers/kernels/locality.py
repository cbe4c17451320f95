"""PCA-locality kernel: locality masks derived from the data's covariance alone.

Lukoianov et al., "Locality in image diffusion models emerges from data statistics"
(arXiv 2509.09672). At noise level sigma the Wiener filter of the fitted Gaussian,
``W = U diag(lam / (lam + sigma^2)) U^T``, says which input pixels inform each output pixel.
Normalised by its diagonal, ``M[n, m] = W[n, m] / W[n, n]``, and binarised,
``mask[n, m] = |M[n, m]| >= threshold * max |M|`` (threshold 0: ``M`` itself, real-valued), it
gives each output pixel m a neighbourhood, and the denoiser is a per-pixel softmax over training
images of the masked distance, at a temperature T (1 in the paper's configurations):

    d_i(m) = sum_n mask[n, m] (x[n] - x_i[n])^2,
    D(x)[m] = sum_i softmax_i(-d_i(m) / (2 T sigma^2)) x_i[m].

The softmax here is exact over the whole training set (the published code normalises it per
data batch, so its output depends on the batch size). The masked distances come from matrix
products over chunks of training images (held transposed, one contiguous row per pixel) with a
streaming log-sum-exp per output pixel. Dense masks cost about 2 N M d^2 flops per call, as in
the dense formulation; for sparse masks, blocks of output pixels with similar masks read only
the input pixels they use (:func:`block_plan`; on Fashion-MNIST at sigma = 0.002, 2% of the
dense multiply-adds). The per-pixel softmax itself (N M d exponentials) is a floor that no mask
structure removes, and weights below the floor are too few to skip (on Fashion-MNIST 26% to
100% of them are above it at every sigma: many training pixels tie).
"""

from typing import NamedTuple, Optional

import torch

from ..core.batching import LevelCache, per_level
from ..core.distributed import mean_rows
from ..core.validation import Interval, Options, as_images, as_level, check_scalar, value_at
from .softmax import StreamingSoftmax, resolve_chunk
from .wiener import wiener_matrix


MASK_RULES = ("published", "positive-diagonal")
DIAGONAL_FLOOR = 1e-6  # the published rule's: rows whose |W[n, n]| is below it are divided by 1


def locality_masks(sigma, eigvals, eigvecs, threshold, rule="published"):
    """Neighbourhoods ``mask[n, m]``: how much input pixel n informs output pixel m.

    ``M[n, m] = W[n, m] / W[n, n]`` and ``mask = |M| >= threshold * max |M|``; with threshold 0
    the real-valued ``M`` itself is the mask (signed weights, as the published code uses it).
    The two rules differ only for input pixels whose diagonal ``W[n, n]`` is (nearly) zero:

    * ``"published"`` (Lukoianov et al.'s and GoldDiff's code): the denominator is 1 where
      ``|W[n, n]| < 1e-6``. Near-constant pixels then keep their small raw row.
    * ``"positive-diagonal"``: every positive diagonal divides its row, and pixels with a zero
      diagonal are in no neighbourhood. A nearly constant pixel's ratios are then huge: they set
      ``max |M|`` and shrink every other mask (on 2,000 Fashion-MNIST images at sigma = 1:
      5,755 mask entries against the published rule's 36,007).

    Parameters
    ----------
    sigma : float
    eigvals : Tensor of shape (r,); eigvecs : Tensor of shape (d, r)
    threshold : float in [0, 1], or a schedule of sigma giving one
    rule : "published" or "positive-diagonal"

    Returns
    -------
    Bool tensor of shape (d, d), or for threshold 0 the float tensor ``M`` of shape (d, d).
    """
    threshold = check_scalar(value_at(threshold, sigma), f"threshold at sigma = {sigma:g}", Interval(float, 0, 1))
    check_scalar(rule, "rule", Options(*MASK_RULES))
    W = wiener_matrix(sigma, eigvals, eigvecs)
    diag = W.diagonal()
    if rule == "published":
        M = W / torch.where(diag.abs() < DIAGONAL_FLOOR, 1, diag)[:, None]
    else:
        live = diag > 0
        M = torch.where(live[:, None], W / torch.where(live, diag, 1)[:, None], 0)
    if threshold == 0:
        return M
    M = M.abs()
    return M >= threshold * M.max()


def support(mask):
    """The bool neighbourhoods of a mask: itself, or the non-zero weights of a real-valued one."""
    return mask != 0 if mask.is_floating_point() else mask


def prepare_transposed(data):
    """Training images centred on their mean and transposed, so each pixel's values are contiguous.

    Parameters
    ----------
    data : Tensor of shape (M, d) or (M, C, H, W)

    Returns
    -------
    centred_t : Tensor of shape (d, M), ``(x_i - c)[n]`` at ``[n, i]``
    center : Tensor of shape (d,), ``c``, the mean training image
    """
    data = data.flatten(1)
    center = mean_rows(data)  # over every rank's rows in a sharded call
    return (data - center).T.contiguous(), center


class Block(NamedTuple):
    """Output pixels ``order[lo:hi]`` and the input pixels their masks read.

    rows : Long tensor of shape (k,), the input pixels read, or None for all d of them
    weights : Tensor of shape (hi - lo, k): ``mask[rows, cols].T`` as numbers, or for a
        ``complement`` block ``(~mask)[rows, cols].T``, to subtract from the sum over all pixels
    complement : bool
    """

    lo: int
    hi: int
    rows: Optional[torch.Tensor]
    weights: torch.Tensor
    complement: bool


class LocalityPlan(NamedTuple):
    """How :func:`pca_locality_posterior_mean` forms the masked sums (see :func:`block_plan`).

    order : Long tensor of shape (d,), output pixels in the order the blocks cover them
    blocks : list of Block
    block_size : int
    """

    order: torch.Tensor
    blocks: list
    block_size: int


_BLOCK_SIZES = (16, 32, 64, 128)  # candidates of the automatic choice, besides one dense block
_GATHER_COST = 48  # modelled cost of gathering an input row, in multiply-adds (rough, 2-core CPU)


def block_plan(mask, block_size=None, dtype=torch.float32):
    """Blocks of output pixels with similar masks, each one product over the inputs it reads.

    With ``block_size >= d`` this is one dense product with the whole mask. Otherwise the output
    pixels are ordered in a greedy nearest-neighbour chain by Hamming distance between their mask
    columns (those with more than d/2 inputs, then the others), cut into blocks of
    ``block_size``, and each block reads only the union of its masks' inputs, or, for the denser
    columns, of their complements (``d_i(m) = sum_n S[n, i] - sum_{n not in mask_m} S[n, i]``).
    Sparse masks then cost about ``|union| * block_size`` multiply-adds per training image and
    block instead of ``d * block_size``. The default block size minimises the modelled cost
    ``sum_b |union_b| * (block + gather)`` (``gather = 0`` where a block reads every input).

    Parameters
    ----------
    mask : bool Tensor of shape (d, d), ``mask[n, m]``
    block_size : int, optional, output pixels per block
    dtype : the dtype of the weights

    Returns
    -------
    LocalityPlan
    """
    d, device = mask.shape[1], mask.device
    block_size = check_scalar(block_size, "block_size", Interval(int, 1), None)
    if block_size is not None and block_size >= d:
        dense = Block(0, d, None, mask.T.to(dtype).contiguous(), False)
        return LocalityPlan(torch.arange(d, device=device), [dense], d)
    mask = mask.cpu()  # the plan is a few hundred small steps: planned on the CPU
    complement = mask.sum(0) > d // 2  # (d,) dense columns, represented by their complement
    rep = torch.where(complement[None, :], ~mask, mask)  # (d, d)
    groups = [complement.nonzero().squeeze(1), (~complement).nonzero().squeeze(1)]
    order = torch.cat([idx[_chain(mask[:, idx])] for idx in groups])  # (d,)
    if block_size is None:  # sizes below d only: a plan with block_size >= d is in pixel order
        costs = {g: _plan_cost(rep, order, len(groups[0]), g) for g in _BLOCK_SIZES if g < d}
        block_size = min(costs, key=costs.get, default=d)
        if block_size >= d or costs[block_size] >= d * d:  # no cheaper than one dense product
            return block_plan(mask.to(device), d, dtype)
    blocks = []
    for lo, hi in _cuts(len(groups[0]), d, int(block_size)):
        cols = order[lo:hi]
        used = rep[:, cols].any(1)  # (d,) inputs read by the block
        rows = None if bool(used.all()) else used.nonzero().squeeze(1)
        weights = (rep[:, cols] if rows is None else rep[rows][:, cols]).T.to(device, dtype).contiguous()
        rows = None if rows is None else rows.to(device)
        blocks.append(Block(lo, hi, rows, weights, bool(complement[cols[0]])))
    return LocalityPlan(order.to(device), blocks, int(block_size))


def _cuts(split, d, block_size):
    """``(lo, hi)`` ranges of at most ``block_size`` covering ``0:split`` and ``split:d`` apart."""
    return [(lo, min(lo + block_size, end)) for begin, end in ((0, split), (split, d))
            for lo in range(begin, end, block_size)]


def _chain(cols):
    """Greedy nearest-neighbour order of the columns of ``cols`` (bool (d, k)) by Hamming distance."""
    k = cols.shape[1]
    if k <= 1:
        return torch.arange(k, device=cols.device)
    c = cols.T.double()  # (k, d), on the CPU
    hamming = c @ (1 - c).T + (1 - c) @ c.T  # (k, k)
    current = int(c.sum(1).argmin())
    order = [current]
    for _ in range(k - 1):
        hamming[:, current] = torch.inf  # visited
        current = int(hamming[current].argmin())
        order.append(current)
    return torch.tensor(order, device=cols.device)


def _plan_cost(rep, order, split, block_size):
    """Modelled cost of a plan per training image, in multiply-adds (a dense product: d^2)."""
    d, cost = rep.shape[0], 0
    for lo, hi in _cuts(split, rep.shape[1], block_size):
        used = int(rep[:, order[lo:hi]].any(1).sum())
        cost += used * (hi - lo) + (0 if used == d else used * _GATHER_COST)
    return cost


def pca_locality_posterior_mean(x, sigma, data, mask, *, temperature=1.0, chunk_size=None, block_size=None,
                                prepared=None, plans=None):
    """Per-pixel softmax over training images of masked squared distances (exact).

    For each chunk of training images, ``S[n, i] = x_i[n] (x_i[n] - 2 x[n])`` (centred on the data
    mean) is formed once per query: it is ``(x[n] - x_i[n])^2`` less the query's own ``x[n]^2``,
    which cancels in the softmax and would only cost float32 precision at large sigma. The masked
    sums ``d_i(m) = sum_n mask[n, m] S[n, i]`` come from one matrix product per block of output
    pixels over the input pixels that block's masks read (see :func:`block_plan`). A streaming
    log-sum-exp over the chunks keeps one running maximum per query and output pixel, so the
    softmax is exact over the whole training set.

    Parameters
    ----------
    x : Tensor of shape (N, C, H, W)
    sigma : float or Tensor of shape (N,)
    data : Tensor of shape (M, d), in the dtype and on the device of ``x``
    mask : bool Tensor of shape (d, d), ``mask[n, m]`` as in :func:`locality_masks`, or a float
        tensor of weights (threshold 0: one dense product), or a function of sigma giving either
        (e.g. ``lambda s: locality_masks(s, eigvals, eigvecs, 0.005)``)
    temperature : float > 0, divides the logits (T above)
    chunk_size : int, optional, training images per chunk (does not change the result)
    block_size : int, optional, output pixels per block of :func:`block_plan` (default: chosen
        from the mask by a cost model; does not change the result beyond rounding)
    prepared : tuple, optional, ``prepare_transposed(data)`` precomputed (then ``data`` is unused)
    plans : core.batching.LevelCache, optional
        Keeps each noise level's mask and block plan for later calls (an estimator passes one
        that lives until its next fit or ``set_params``). Default: one for this call, shared by
        its blocks of queries.

    Returns
    -------
    Tensor of the shape of ``x``.
    """
    x = as_images(x)
    differentiable = torch.is_grad_enabled() and x.requires_grad  # the fast path works in place
    d = x[0].numel()
    prepared = prepare_transposed(data) if prepared is None else prepared  # (d, M), (d,)
    if prepared[0].shape[0] != d or prepared[0].dtype != x.dtype or prepared[0].device != x.device:
        raise ValueError(
            f"training data must have d = {d} features, dtype {x.dtype} and device {x.device} "
            f"like x; got d = {prepared[0].shape[0]}, {prepared[0].dtype}, {prepared[0].device}"
        )
    temperature = check_scalar(temperature, "temperature", Interval(float, 0, closed="neither"))
    plans = LevelCache() if plans is None else plans

    def at_level(x, level):
        def build():  # the level's mask, and the block plan of the fast path (one dense product for a
            checked = checked_mask(mask(level) if callable(mask) else mask, d, level)  # real-valued mask)
            return checked, None if differentiable else block_plan(
                checked.to(x.device), d if checked.is_floating_point() else block_size, x.dtype)

        checked, plan = plans.get((level, block_size, differentiable, x.dtype, x.device), build)
        if differentiable:
            return _pca_locality_differentiable(x, level * temperature**0.5, prepared, checked, chunk_size)
        return _pca_locality(x, level * temperature**0.5, prepared, plan, chunk_size)

    # work space per query once the data chunks are at their 512 images: three (d, chunk) blocks
    return per_level(x, sigma, at_level, per_query_bytes=3 * d * 512 * x.element_size())


def checked_mask(mask, d, sigma):
    """``mask`` if it is a bool or finite float tensor of shape (d, d); ValueError naming sigma otherwise."""
    ok = isinstance(mask, torch.Tensor) and (mask.dtype == torch.bool or mask.is_floating_point())
    if not (ok and tuple(mask.shape) == (d, d)):
        got = f"{mask.dtype} of shape {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool or float tensor of shape ({d}, {d}), got {got} at sigma = {sigma:g}")
    if mask.is_floating_point() and not bool(torch.isfinite(mask).all()):
        raise ValueError(f"mask has NaN or Inf weights at sigma = {sigma:g}")
    return mask


def _pca_locality_differentiable(x, sigma, prepared, mask, chunk_size):
    """PCA-locality at one ``sigma`` with out-of-place operations, so that autograd reaches ``x``
    (the Jacobian analyses): the same softmax with the full squared distances ``(x_i[n] -
    q[n])^2`` and one dense masked product per chunk; about as exact, slower."""
    n = x.shape[0]
    data_t, center = prepared  # (d, M), (d,)
    d = data_t.shape[0]
    chunk = max(1, min(resolve_chunk(chunk_size, n * 128, 2**19, minimum=512), data_t.shape[1]))
    scale = -1 / (2 * as_level(sigma) ** 2)
    weights_t = mask.to(device=x.device, dtype=x.dtype).T  # (d_out, d_in)
    queries = (x.reshape(n, -1) - center).T[:, :, None]  # (d, N, 1)
    acc = StreamingSoftmax((d, n, 1), x.dtype, x.device, layout="pair", sum_dtype=x.dtype)
    for start in range(0, data_t.shape[1], chunk):
        values = data_t[:, start:start + chunk]  # (d, c)
        c = values.shape[1]
        squared = (values[:, None, :] - queries).square().reshape(d, n * c)  # (d_in, N c)
        logits = (weights_t @ squared).mul(scale).reshape(d, n, c)  # (d_out, N, c)
        acc.add(logits, 2, lambda w: (torch.bmm(w, values[:, :, None]), w.sum(2, keepdim=True)))
    return (center + acc.mean().squeeze(2).T).reshape(x.shape)


def _pca_locality(x, sigma, prepared, plan, chunk_size):
    """PCA-locality at one noise level ``sigma`` (float) with the block ``plan`` of its mask."""
    n = x.shape[0]
    queries = x.reshape(n, -1)  # (N, d)
    d = queries.shape[1]
    data_t, center = prepared  # (d, M), (d,)
    chunk = max(1, min(resolve_chunk(chunk_size, n * 128, 2**19, minimum=512), data_t.shape[1]))  # ~4096 (query, image)
    identity = plan.block_size >= d  # one dense block: outputs in pixel order
    scale = -1 / (2 * as_level(sigma) ** 2)
    twice_q = (2 * scale) * (queries - center).T[:, :, None]  # (d, N, 1)
    # one softmax per (output pixel, query); sums kept in the input's dtype
    acc = StreamingSoftmax((d, n, 1), x.dtype, x.device, layout="pair", sum_dtype=x.dtype)
    # work space reused by every chunk: fresh large blocks would be page-faulted in every time
    space = queries.new_empty(3 * d * n * chunk + 2 * d * chunk)
    for start in range(0, data_t.shape[1], chunk):
        values = data_t[:, start:start + chunk]  # (d, c)
        c = values.shape[1]
        terms, logits, gathered, scaled, ordered = _views(space, d * n * c, d * c)
        # scale * S[n, i] with S[n, i] = x_i[n] (x_i[n] - 2 q[n]) = (x_i[n] - q[n])^2 - q[n]^2
        # (the query's own term cancels in the softmax), so the masked sums are the logits
        scaled = torch.mul(values, scale, out=scaled.view(d, c))
        terms = torch.sub(scaled[:, None, :], twice_q, out=terms.view(d, n, c)).mul_(values[:, None, :])
        terms, logits = terms.view(d, n * c), logits.view(d, n * c)  # logits: rows in plan order
        total = terms.sum(0) if any(b.complement for b in plan.blocks) else None  # (N c,)
        for b in plan.blocks:
            rows = terms
            if b.rows is not None:  # (k, N c)
                rows = torch.index_select(terms, 0, b.rows, out=gathered[:len(b.rows) * n * c].view(-1, n * c))
            if b.complement:
                torch.addmm(total.expand(b.hi - b.lo, -1), b.weights, rows, alpha=-1, out=logits[b.lo:b.hi])
            else:
                torch.mm(b.weights, rows, out=logits[b.lo:b.hi])
        if not identity:  # (d, c), plan order
            values = torch.index_select(values, 0, plan.order, out=ordered.view(d, c))
        acc.add(logits.view(d, n, c), 2, lambda w: (torch.bmm(w, values[:, :, None]), w.sum(2, keepdim=True)))
    out = acc.mean().squeeze(2)  # (d, N), plan order
    if not identity:
        out = torch.empty_like(out).index_copy_(0, plan.order, out)
    return (center + out.T).reshape(x.shape)


def _views(space, big, small):
    """Three flat views of ``big`` and two of ``small`` elements at the start of ``space``."""
    sizes = (big, big, big, small, small)
    return torch.split(space[:sum(sizes)], sizes)
