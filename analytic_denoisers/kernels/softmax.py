"""The streaming softmax: ``sum_i softmax_i(l_i) v_i`` over blocks of candidates, exact.

Every softmax denoiser of the package (empirical, top-k, PCA-locality, LS / ELS / bbELS, PSPC)
reduces its logits with :class:`StreamingSoftmax`: one running maximum per query, and what was
accumulated under an older maximum is rescaled when it grows, so the result does not depend on
how the candidates are split into blocks (up to rounding). Weights are floored at a normal float
(:func:`log_weight_floor`). :func:`resolve_chunk` is the one rule for block sizes.

In a sharded call (:mod:`~analytic_denoisers.core.distributed`) each rank accumulates over its
own training rows, and reading the result (:meth:`StreamingSoftmax.mean`,
:meth:`~StreamingSoftmax.log_normaliser`) first merges every rank's running maximum and sums
(:meth:`StreamingSoftmax.merge_shards`): the same exact result on every rank.
"""

import math

import torch

from ..core import distributed
from ..core.validation import Interval, check_scalar


def log_weight_floor(dtype):
    """Log of the smallest weight kept: ``e^30`` times the smallest normal float of ``dtype``.

    Weights that would underflow below it are raised to it. That changes the result by a
    relative amount below ``M * e^31 * finfo.tiny`` (about 2e-20 in float32 for M = 60,000: far
    below rounding). It keeps ``exp`` off its slow underflow path (~10x slower on CPU), and
    keeps products of a weight with a pixel value above 1e-13 normal floats: arithmetic on
    subnormal floats is another 10-100x slower on x86 (measured: the LS machine took 13x longer
    at sigma = 0.1 than at sigma = 2 with the floor at ``e * tiny``).
    """
    return math.log(torch.finfo(dtype).tiny) + 30


def resolve_chunk(chunk_size, per_item, budget, minimum=1):
    """Items (training images) per block: ``chunk_size`` validated, or by default
    ``max(minimum, budget // per_item)``, so that a block holds about ``budget`` values when
    each item contributes ``per_item``."""
    if chunk_size is None:
        return max(minimum, budget // max(per_item, 1))
    return check_scalar(chunk_size, "chunk_size", Interval(int, 1))


def floored_weights(logits, reference, floor, dtype, in_place=False, scale=None):
    """``exp(max(scale * logits - reference, floor))``: scaled, subtracted and clamped in the
    logits' dtype (``reference`` is rounded to it), exponentiated in ``dtype``. ``in_place``
    reuses the memory of ``logits``; ``scale`` (a float, default 1) costs no extra pass."""
    out = logits if in_place else None
    reference = reference.to(logits.dtype)
    shifted = (torch.sub(logits, reference, out=out) if scale is None
               else torch.add(-reference, logits, alpha=scale, out=out))
    shifted = torch.clamp(shifted, min=floor, out=out).to(dtype)
    return shifted.exp_() if in_place else torch.exp(shifted)


LAYOUTS = ("fused", "pair", "weights")


class StreamingSoftmax:
    """Running softmax-weighted sums over blocks of candidates, exact for any blocking.

    Parameters
    ----------
    max_shape : tuple, shape of the running maximum: the logits' shape with the candidate
        dimension of size 1, e.g. ``(N, 1)`` for logits ``(N, c)``
    logit_dtype : dtype of the logits (and of the running maximum)
    device : torch device
    layout : what ``weighted_sums`` returns (see :meth:`add`):
        ``"fused"``: one tensor whose last column is the sum of the weights (values with a
        column of ones, one matrix product); ``"pair"``: ``(numerator, sum of the weights)``;
        ``"weights"``: the sum of the weights alone (for :meth:`log_normaliser`)
    weight_dtype : dtype the weights are exponentiated and summed in (default: ``logit_dtype``)
    sum_dtype : dtype the sums are accumulated in across blocks (default float64: with
        millions of nearly equal weights, float32 running sums drift by 1e-3)

    Attributes
    ----------
    run_max : Tensor of ``max_shape``
    sums : tuple of Tensors, the accumulated weighted sums (None before the first block)
    collectives : the sharded call in progress when it was made (None: a local softmax)
    """

    def __init__(self, max_shape, logit_dtype, device, *, layout="fused", weight_dtype=None,
                 sum_dtype=torch.float64):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.weight_dtype = logit_dtype if weight_dtype is None else weight_dtype
        self.floor = log_weight_floor(self.weight_dtype)
        self.run_max = torch.full(tuple(max_shape), -torch.inf, dtype=logit_dtype, device=device)
        self.sum_dtype, self.sums = sum_dtype, None
        self.collectives = distributed.active()

    def block_max(self, logits, dim, scale=None):
        """The largest (scaled) logit of a block per query, keeping ``dim`` (the first step of :meth:`add`)."""
        if scale is None:
            return logits.amax(dim, keepdim=True)
        return (logits.amin if scale < 0 else logits.amax)(dim, keepdim=True) * scale

    def updated_max(self, block_max, rows=None):
        """The running maximum once a block whose :meth:`block_max` is ``block_max`` is added: the
        reference every weight of that block is relative to (``exp(l - updated_max)``)."""
        run_max = self.run_max if rows is None else self.run_max[rows]
        return torch.maximum(run_max, block_max.to(run_max.dtype)).detach()

    def add(self, logits, dim, weighted_sums, rows=None, scale=None, block_max=None):
        """Fold in one block of candidates.

        Parameters
        ----------
        logits : Tensor with the candidates along ``dim``; overwritten (its memory reused for
            the weights) unless autograd needs it
        dim : int, the candidate dimension
        weighted_sums : callable ``weights -> Tensor or tuple of Tensors`` in the ``layout``:
            the block's sums over its candidates (e.g. ``weights @ values``), each with the
            leading dimension of the queries
        rows : long Tensor, optional: the block is for these queries (rows of ``run_max``) only
        scale : float, optional: the logits are ``scale * logits`` (folded into the exponent)
        block_max : Tensor, optional: :meth:`block_max` of these logits, if the caller has it
        """
        in_place = not (torch.is_grad_enabled() and logits.requires_grad)
        run_max = self.run_max if rows is None else self.run_max[rows]
        if block_max is None:
            block_max = self.block_max(logits, dim, scale)
        new_max = self.updated_max(block_max, rows)
        # unnormalised weights, floored at a normal float (see log_weight_floor)
        weights = floored_weights(logits, new_max, self.floor, self.weight_dtype, in_place, scale)
        block = weighted_sums(weights)
        block = block if isinstance(block, tuple) else (block,)
        if len(block) != (2 if self.layout == "pair" else 1):
            raise ValueError(f"weighted_sums gave {len(block)} sums for the {self.layout!r} layout")
        if self.sums is None:
            n = self.run_max.shape[0]
            self.sums = tuple(b.new_zeros((n,) + b.shape[1:], dtype=self.sum_dtype) for b in block)
        # what was accumulated under the old maximum, rescaled (zero before the first block)
        rescale = torch.exp(torch.clamp(run_max - new_max, min=self.floor))
        old = self.sums if rows is None else tuple(s[rows] for s in self.sums)
        new = tuple(s * rescale + b.to(self.sum_dtype) for s, b in zip(old, block))
        if rows is None:
            self.run_max, self.sums = new_max, new
        else:
            self.run_max[rows] = new_max
            for s, v in zip(self.sums, new):
                s[rows] = v

    def merge_shards(self):
        """Merge every rank's running maximum and sums into the whole training set's, in place (a
        no-op outside a sharded call, and once merged): two all-reduces, the maxima (with the sums'
        shapes) and then the rescaled sums, in float64. Every rank must call it, in the same order
        as its other merges; a rank whose shard added nothing contributes zeros."""
        collectives, self.collectives = self.collectives, None
        if collectives is None:
            return
        count = 2 if self.layout == "pair" else 1
        grad = self.sums is not None and any(s.requires_grad for s in self.sums)
        local = self.run_max.to(torch.float64)
        merged, shapes, grad = collectives.merge_maxima(
            local, None if self.sums is None else [s.shape for s in self.sums], count, grad)
        if grad:  # on every rank, so that none is left waiting
            raise ValueError("a sharded softmax does not propagate gradients across ranks: differentiate an "
                             "unsharded denoiser")
        if self.sums is None:
            self.sums = tuple(self.run_max.new_zeros(shape, dtype=self.sum_dtype) for shape in shapes)
        # this rank's sums under the merged maximum (zero where it had no candidate: -inf)
        rescale = torch.where(torch.isfinite(local), torch.exp(torch.clamp(local - merged, min=self.floor)), 0.0)
        flat = collectives.total(torch.cat([(s.to(torch.float64) * rescale).reshape(-1) for s in self.sums]))
        self.sums = tuple(part.reshape(s.shape).to(self.sum_dtype)
                          for part, s in zip(flat.split([s.numel() for s in self.sums]), self.sums))
        self.run_max = merged.to(self.run_max.dtype)

    def _weight_sum(self):
        return {"fused": lambda: self.sums[0][..., -1:], "pair": lambda: self.sums[1],
                "weights": lambda: self.sums[0]}[self.layout]()

    def mean(self, dtype=None):
        """The softmax averages: ``numerator / sum of the weights`` ("fused" or "pair" layout)."""
        if self.layout == "weights":
            raise ValueError("a StreamingSoftmax with the 'weights' layout holds no numerator")
        self.merge_shards()
        numerator = self.sums[0][..., :-1] if self.layout == "fused" else self.sums[0]
        out = numerator / self._weight_sum()
        return out if dtype is None else out.to(dtype)

    def log_normaliser(self):
        """``log sum_i exp(l_i)`` per query, shape ``max_shape`` (in ``sum_dtype``)."""
        self.merge_shards()
        return self.run_max + self._weight_sum().log()


def softmax_average(aug_q, keys, values, chunk):
    """``sum_i softmax_i(aug_q . keys_i) values_i``, streamed over chunks of candidates.

    Parameters
    ----------
    aug_q : Tensor of shape (N, k), augmented queries (logits are ``aug_q @ keys.T``)
    keys : Tensor of shape (M, k)
    values : Tensor of shape (M, v + 1), the values to average with a last column of ones
    chunk : int, candidates per block

    Returns
    -------
    Tensor of shape (N, v), in the dtype of ``aug_q``. Differentiable with respect to ``aug_q``
    when autograd is on.
    """
    acc = StreamingSoftmax((aug_q.shape[0], 1), aug_q.dtype, aug_q.device)
    for start in range(0, keys.shape[0], chunk):
        block = values[start:start + chunk]
        acc.add(aug_q @ keys[start:start + chunk].T, 1, lambda w: w @ block)
    return acc.mean(aug_q.dtype)
