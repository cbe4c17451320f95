"""Softmaxes over image windows, candidates last: the engine of the LS, ELS / bbELS and PSPC kernels.

A *candidate* is an image the queries' windows are compared with at the same place: a training
image (LS, PSPC) or a shifted training image (ELS, bbELS: the window of ``x_i`` at ``p + s`` is
the window at ``p`` of ``x_i`` shifted by ``s``). For every query ``n``, pixel ``p`` and candidate
``j`` the kernels need the window distance

    d[n, p, j] = sum over the P x P window w around p of sum_channels (x_n[w] - c_j[w])^2

(zero or circular padding), its softmax over ``j`` at each ``(n, p)``, and softmax-weighted sums.

Layout and cost. Candidates are the last, contiguous dimension of every block, ``(C, H, W, c)``,
so that every operation is a long vectorised loop and the window sums along ``H`` and ``W`` are
additions of shifted slices. :func:`box_sums` sums ``P`` consecutive entries by doubling:
``floor(log2 P) + popcount(P) - 1`` additions per axis (4 for ``P = 7``, 9 for ``P = 55``), so
the cost hardly grows with ``P``. Blocks hold about :data:`BLOCK_ELEMENTS` values (a few MiB:
measured on this machine, additions on 1 MiB blocks ran 2-4x faster than on 18 MiB ones).

Zero padding that would make the image more than 4x larger (windows wider than the image, such
as P = 55 on 28 x 28) is replaced by clipping each window to the image, summed from float64
prefix sums (:func:`clipped_window_sums`, O(H W) for any P).

Precision. The distances are sums of non-negative terms computed directly (no expanded
``|q|^2 - 2 q.k + |k|^2``; prefix sums only in float64): no cancellation, so each distance has a
relative rounding error below ``kappa u`` with ``u`` the unit roundoff and
``kappa = 5 + C + 2 box_adds(P)`` (difference, square, channel sum, the two window sums, the
scale, the maximum rounded to float32). A logit ``l = -d / (2 sigma^2)`` is then off by at most
``kappa u |l|``. Float64 inputs are computed in float64. For float32 inputs every distance is
computed in float32, and a bound decides where that is not enough (:meth:`WindowDistances.refine`):
a query pixel whose running maximum ``l_max`` (a bound on the final ``|l_max|``, as ``l <= 0``)
has ``kappa u (|l_max| + 30) > LOGIT_TOLERANCE``. At such a pixel, a block's candidates whose
float32 logit is within ``31 + 3 kappa u |l_max|`` of the maximum (a superset of those within 30
in exact arithmetic) get float64 distances summed directly (:meth:`WindowDistances.exact`), and
the pixel's block sums are made from them alone. Every other candidate carries a weight below
``e^-30`` of the largest (:data:`RELEVANT_LOGITS`) whether its float32 logit is exact or not: a
relative change below ``M e^-30`` (5.6e-9 for M = 60,000). Large logits come with small sigma
and far windows, where few candidates are near the maximum (measured on Fashion-MNIST, P = 5,
60,000 images, 4 test images: 0.002-0.008% of the pairs at sigma = 0.002-0.12, none at
sigma >= 0.47), so the float64 work is a small gather, not a second pass over the candidates.
Where the pairs to refine would hold more than 1/32 of a block's values (wide windows with many
candidates near the maximum, such as image-sized windows at large sigma, where the logits of
noise-dominated queries are in the hundreds), the block is computed in float64 instead, and so
are the next blocks of the same queries until float32 would do again (:class:`Precision`).
"""

import torch
import torch.nn.functional as F

from .softmax import StreamingSoftmax

BLOCK_ELEMENTS = 2**19  # values per block of window distances (2 MiB in float32)
MIN_CANDIDATES = 128  # candidates per block at least: the innermost, vectorised dimension
LOGIT_TOLERANCE = 1e-4  # largest rounding error allowed in a logit that carries weight
RELEVANT_LOGITS = 30.0  # logits more than this below the maximum carry no weight that matters
FLOAT32_UNIT = torch.finfo(torch.float32).eps / 2  # the unit roundoff u of float32
WHOLE_BLOCK = "whole block"  # WindowDistances.refine: compute this block in float64 rather than pair by pair


def box_adds(size):
    """Additions per axis :func:`box_sums` makes for windows of ``size``: ``floor(log2 size) + popcount(size) - 1``."""
    return size.bit_length() - 1 + bin(size).count("1") - 1


class Workspace:
    """Tensors reused from block to block, by key and shape.

    The window kernels make each block's squared differences, candidates and shifted images here
    (``out=``) rather than in fresh tensors: a fresh multi-MiB tensor can be page-faulted in
    again on every block (measured once on this machine at 10x the operation itself). The
    window sums allocate theirs: a workspace tensor for each of their intermediates was slower
    (a larger cache footprint than the allocator's reuse of what was just freed).
    """

    def __init__(self):
        self._tensors = {}

    def __call__(self, key, shape, like, zero=False):
        """The tensor of ``key`` and ``shape`` (dtype and device of ``like``); zeros when made if ``zero``."""
        index = (key, tuple(shape), like.dtype, like.device)
        if index not in self._tensors:
            make = torch.zeros if zero else torch.empty
            self._tensors[index] = make(tuple(shape), dtype=like.dtype, device=like.device)
        return self._tensors[index]


def box_sums(t, size, dims, workspace=None):
    """Sums of every ``size`` consecutive entries along each of ``dims`` (the windows inside ``t``).

    Partial sums of 1, 2, 4, ... entries are built by doubling and combined along the binary
    digits of ``size``: :func:`box_adds` additions per axis, of non-negative terms when ``t`` is
    (relative error at most ``box_adds(size) u`` per axis, no cancellation).

    Parameters
    ----------
    t : Tensor
    size : int >= 1, at most ``t.shape[d]`` for each ``d`` in ``dims``
    dims : sequence of ints
    workspace : :class:`Workspace`, optional: intermediates and the result go there (no
        autograd; the result is overwritten by the next call with the same workspace).
        Without it the sums are differentiable.

    Returns
    -------
    Tensor of the shape of ``t`` with ``t.shape[d] - size + 1`` entries along each ``d`` in ``dims``.
    """
    def add(a, b, key):
        if workspace is None:
            return a + b
        return torch.add(a, b, out=workspace(key, a.shape, a))

    for axis, dim in enumerate(dims):
        n = t.shape[dim] - size + 1
        if n < 1:
            raise ValueError(f"window of size {size} is larger than the axis ({t.shape[dim]})")
        total, fresh, run, width, offset = None, False, t, 1, 0
        while True:
            if size & width:  # add the sums of `width` entries that start at `offset`
                part = run.narrow(dim, offset, n)
                if total is None:
                    total = part
                elif fresh:
                    total.add_(part)
                else:
                    total, fresh = add(total, part, ("total", axis)), True
                offset += width
            if 2 * width > size:
                break
            m = run.shape[dim] - width
            run, width = add(run.narrow(dim, 0, m), run.narrow(dim, width, m), ("run", axis, width)), 2 * width
        t = total
    return t


def cyclic_box_sums(t, size, dims, start=0):
    """Cyclic window sums: ``out[j] = sum_{k < size} t[(j + start + k) mod n]`` along each of ``dims``.

    The circular padding of :func:`box_sums` without the padding: the same doubling on arrays of
    the image's size (windows wider than the axis wrap round more than once). Differentiable
    when autograd records ``t``.
    """
    grad = torch.is_grad_enabled() and t.requires_grad

    def shifted_add(a, b, shift, dim, in_place):  # a[j] + b[(j + shift) mod n]
        n = a.shape[dim]
        o = shift % n
        if grad:
            return a + torch.roll(b, -o, dim)
        out = a if in_place else torch.empty_like(a)
        torch.add(a.narrow(dim, 0, n - o), b.narrow(dim, o, n - o), out=out.narrow(dim, 0, n - o))
        if o:
            torch.add(a.narrow(dim, n - o, o), b.narrow(dim, 0, o), out=out.narrow(dim, n - o, o))
        return out

    for dim in dims:
        n = t.shape[dim]
        total, fresh, run, width, offset = None, False, t, 1, start
        while True:
            if size & width:
                if total is None:  # run rolled by offset
                    o = offset % n
                    total = run if not o else torch.cat([run.narrow(dim, o, n - o), run.narrow(dim, 0, o)], dim)
                    fresh = bool(o)
                else:
                    total, fresh = shifted_add(total, run, offset, dim, fresh), True
                offset += width
            if 2 * width > size:
                break
            run, width = shifted_add(run, run, width, dim, False), 2 * width
        t = total
    return t


def clipped_window_sums(t, size, pad, dims):
    """Window sums with zero padding by clipping each window to the axis, from float64 prefix sums.

    ``out[j] = sum t[max(0, j - pad) : min(n, j - pad + size)]`` along each of ``dims``: O(n)
    work per axis for any ``size``, where :func:`box_sums` on a zero-padded copy would add
    ``2 pad`` entries per axis (8.6x the values for P = 55 on 28 x 28). Float64 (differences of
    prefix sums of non-negative terms lose at most ``u64`` times the row's total); differentiable.
    """
    t = t.double()
    for dim in dims:
        n = t.shape[dim]
        m = n + 2 * pad - size + 1  # windows along dim
        shape = list(t.shape)
        shape[dim] = n + 2 * pad + 1
        extended = t.new_empty(shape)  # pad + 1 zeros, the n prefix sums, pad copies of the total
        extended.narrow(dim, 0, pad + 1).zero_()
        if torch.is_grad_enabled() and t.requires_grad:  # out= does not record a gradient
            extended.narrow(dim, pad + 1, n).copy_(t.cumsum(dim))
        else:
            torch.cumsum(t, dim, out=extended.narrow(dim, pad + 1, n))
        extended.narrow(dim, n + pad + 1, pad).copy_(extended.narrow(dim, n + pad, 1).expand(
            *shape[:dim % len(shape)], pad, *shape[dim % len(shape) + 1:]))
        t = extended.narrow(dim, size, m) - extended.narrow(dim, 0, m)
    return t


def wide(h, w, pad):
    """Whether zero padding by ``pad`` makes an (h, w) image more than 4x larger: then windows
    are clipped (:func:`clipped_window_sums`) rather than padded. (Measured: PSPC's second pass
    with 8 x 8 crops on 28 x 28, 2.8x larger, ran 1.3-1.5x slower clipped; LS with P = 55,
    8.6x larger, 2x faster.)"""
    return (h + 2 * pad) * (w + 2 * pad) > 4 * h * w


def candidates_last(images, workspace=None):
    """Images (c, C, H, W) as the candidate block (C, H, W, c), contiguous (in ``workspace`` if given)."""
    if workspace is None:
        return images.permute(1, 2, 3, 0).contiguous()
    c, channels, h, w = images.shape
    return workspace("candidates", (channels, h, w, c), images).copy_(images.permute(1, 2, 3, 0))


def zero_pad(t, pad, dims=(1, 2)):
    """``t`` with ``pad`` zeros on both sides of ``dims`` (differentiable)."""
    dims = {d % t.dim() for d in dims}
    return F.pad(t, [pad if d in dims else 0 for d in reversed(range(t.dim())) for _ in (0, 1)])


class WindowDistances:
    """Window distances between a fixed set of queries and blocks of candidates, candidates last.

    Parameters
    ----------
    x : Tensor of shape (n, C, H, W), the queries
    size : int, window side P
    pad : int, padding on each side: ``size // 2`` centres a window on every pixel (LS, ELS),
        0 keeps the windows inside the image (PSPC crops)
    padding : "zeros" or "circular"

    Calling it with a candidate block (C, H, W, c) and a dtype gives the distances
    ``(n, H + 2 pad - P + 1, W + 2 pad - P + 1, c)`` in that dtype (``(n, H, W, c)`` with circular
    padding, whose windows wrap round: :func:`cyclic_box_sums`).
    """

    def __init__(self, x, size, pad, padding):
        self.x, self.size, self.pad, self.padding = x, size, pad, padding
        self._queries, self.workspace = {}, Workspace()
        self.kappa = 5 + x.shape[1] + 2 * box_adds(size)

    def queries(self, dtype):
        """The queries as (C, n, H, W, 1) in ``dtype`` (cast once)."""
        if dtype not in self._queries:
            self._queries[dtype] = self.x.to(dtype).permute(1, 0, 2, 3).unsqueeze(-1)
        return self._queries[dtype]

    def __call__(self, candidates, dtype):
        x, pad = self.queries(dtype), self.pad
        _, n, h, w, _ = x.shape
        if torch.is_grad_enabled() and (x.requires_grad or candidates.requires_grad):
            cand = candidates.to(dtype)
            sq = sum((x[k] - cand[k]).square() for k in range(len(x)))
            if self.padding == "circular":
                return cyclic_box_sums(sq, self.size, (1, 2), -pad)
            if wide(h, w, pad):
                return clipped_window_sums(sq, self.size, pad, (1, 2))
            return box_sums(zero_pad(sq, pad), self.size, (1, 2))
        cand = candidates if candidates.dtype == dtype else \
            self.workspace("cast", candidates.shape, x).copy_(candidates)
        # no autograd: the squares go straight into a reused buffer (whose zero border stays)
        clipped = self.padding == "zeros" and wide(h, w, pad)
        if self.padding == "circular" or clipped:
            pad = 0
        sq = self.workspace("squares", (n, h + 2 * pad, w + 2 * pad, cand.shape[-1]), x, zero=True)
        inner = sq[:, pad:pad + h, pad:pad + w]
        torch.sub(x[0], cand[0], out=inner).square_()
        for k in range(1, len(x)):
            diff = x[k] - cand[k]
            inner.addcmul_(diff, diff)
        if self.padding == "circular":
            return cyclic_box_sums(sq, self.size, (1, 2), -self.pad)
        if clipped:
            return clipped_window_sums(sq, self.size, self.pad, (1, 2))
        return box_sums(sq, self.size, (1, 2))

    def imprecise(self, new_max):
        """Where float32 logits could be off by more than :data:`LOGIT_TOLERANCE`: a bool tensor of
        the shape of ``new_max``, a running maximum of the logits (a bound on ``|l_max|``, as
        ``l <= 0``; ``-inf`` where no candidate came yet)."""
        # kappa u (|l_max| + 30) > tolerance, with |l_max| = -l_max
        return (new_max < RELEVANT_LOGITS - LOGIT_TOLERANCE / (self.kappa * FLOAT32_UNIT)) & (new_max > -torch.inf)

    def refine(self, candidates, distances, new_max, scale, block_max=None):
        """The exact logits a block of float32 ``distances`` needs (see the module's docstring).

        Parameters
        ----------
        candidates : Tensor (C, H, W, c), the block the distances are of
        distances : Tensor (n, H', W', c), float32, ``inf`` where masked; float64 to ask only
            whether float32 ones would have needed the whole block in float64
        new_max : Tensor (n, H', W', 1), float64, the running maximum of the logits with this block
        scale : float < 0, the logits are ``scale * distances``
        block_max : Tensor (n, H', W', 1), optional, the block's largest logits, if the caller has
            them: only the pixels where they come near ``new_max`` are searched for candidates

        Returns
        -------
        None where no query pixel needs it; :data:`WHOLE_BLOCK` where the pairs to refine hold
        more values than 1/32 of the block's squared differences (then the block is better
        computed in float64); else a :class:`Refinement` (None for float64 distances).
        """
        pixels = self.imprecise(new_max)
        if not pixels.any():
            return None
        if block_max is None:
            block_max = scale * distances.amin(-1, keepdim=True)
        # keep the logits above new_max - 31 - 3 kappa u |new_max| (new_max <= 0)
        low = new_max * (1 + 3 * self.kappa * FLOAT32_UNIT) - (RELEVANT_LOGITS + 1)
        # the pixels whose best candidate in the block is near the maximum (a few at small sigma); at
        # the others every float32 weight of the block is below e^-30 of the largest, as it should be
        where = (pixels & (block_max >= low - 1)).squeeze(-1).nonzero()  # (A, 3)
        if not len(where):
            return None
        limit = (low[tuple(where.T)] / scale).to(distances.dtype)  # (A, 1), in distances
        hits = (distances[tuple(where.T)] <= limit).nonzero()  # (K, 2): (row of where, candidate)
        n, c, h, w = self.x.shape
        if len(hits) * self.size**2 * c > n * (h + 2 * self.pad) * (w + 2 * self.pad) * distances.shape[-1] // 32:
            return WHOLE_BLOCK  # a wide window with many candidates near the maximum
        if distances.dtype == torch.float64:
            return None
        pairs = torch.cat([where[hits[:, 0]], hits[:, 1:]], 1)
        return Refinement(where, pairs, scale * self.exact(candidates, pairs))

    def exact(self, candidates, pairs):
        """Float64 window distances of ``pairs`` (K, 4), rows (query, row, column, candidate) of the
        distances ``self(candidates, dtype)`` gives, each summed directly over its window."""
        _, _, h, w = self.x.shape
        offsets = torch.arange(self.size, device=pairs.device) - self.pad
        rows, cols = pairs[:, 1, None] + offsets, pairs[:, 2, None] + offsets  # (K, P) each
        inside = None
        if self.padding == "circular":
            rows, cols = rows % h, cols % w
        else:  # zero padding: window entries outside the image are 0 in both
            inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
            rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        rows, cols = rows[:, :, None], cols[:, None, :]
        queries = self.queries(torch.float64)[:, pairs[:, 0, None, None], rows, cols, 0]  # (C, K, P, P)
        squares = (queries - candidates[:, rows, cols, pairs[:, 3, None, None]].double()).square()
        if inside is not None:
            squares = squares * inside
        return squares.sum((0, 2, 3))


class Refinement:
    """Exact logits for the query pixels where float32 ones are not enough (:meth:`WindowDistances.refine`).

    Attributes
    ----------
    pixels : long Tensor (A, 3), the query pixels (query, row, column) whose block weights come
        from ``pairs`` alone
    pairs : long Tensor (K, 4), (query, row, column, candidate) of the candidates kept there
    logits : float64 Tensor (K,), their exact logits
    """

    def __init__(self, pixels, pairs, logits):
        self.pixels, self.pairs, self.logits = pixels, pairs, logits

    def weights(self, reference, floor, dtype):
        """``exp(max(logit - reference, floor))`` of each pair, in ``dtype``; ``reference`` (n, H', W', 1)."""
        n, r, c = self.pairs[:, 0], self.pairs[:, 1], self.pairs[:, 2]
        return torch.exp(torch.clamp(self.logits - reference[n, r, c, 0], min=floor)).to(dtype)

    def exact_max(self, block_max):
        """``block_max`` (n, H', W', 1) in float64, with the largest exact logit of the pairs at
        :attr:`pixels` (``-inf`` where none is kept): a float32 maximum can be off the exact one by
        ``kappa u |l_max|``, many logits when ``|l_max|`` is huge, and the weights of the pairs
        must be relative to theirs (at most 1, and never floored by a maximum set too high)."""
        exact = block_max.to(torch.float64).clone()
        exact[tuple(self.pixels.T)] = -torch.inf
        height, width = exact.shape[1:3]
        exact.view(-1).scatter_reduce_(0, self.flat_pixels(height, width), self.logits, "amax")
        return exact

    def flat_pixels(self, height, width):
        """The pairs' query pixels as flat indices into (n, H', W')."""
        return (self.pairs[:, 0] * height + self.pairs[:, 1]) * width + self.pairs[:, 2]

    def put_sums(self, weights, sums, values=None):
        """Overwrite a block's sums (n, H', W', k) at :attr:`pixels` by the pairs' ``weights``
        summed (``values`` None, k = 1) or weighted sums of ``values`` (C, H, W, c) (k = C)."""
        height, width = sums.shape[1:3]
        sums[tuple(self.pixels.T)] = 0
        terms = weights[:, None] if values is None else \
            (weights * values[:, self.pairs[:, 1], self.pairs[:, 2], self.pairs[:, 3]]).T
        sums.view(-1, sums.shape[-1]).index_add_(0, self.flat_pixels(height, width), terms.to(sums.dtype))
        return sums

    def put_weights(self, weights, values):
        """Overwrite a block's weights (n, H', W', c) at :attr:`pixels`: the pairs' ``values``, 0 elsewhere."""
        weights[tuple(self.pixels.T)] = 0
        weights[tuple(self.pairs.T)] = values.to(weights.dtype)
        return weights


def query_blocks(n, per_query, minimum=MIN_CANDIDATES):
    """Queries per block so that a block of ``minimum`` candidates holds about :data:`BLOCK_ELEMENTS`."""
    return max(1, min(n, BLOCK_ELEMENTS // max(per_query * minimum, 1)))


def candidates_per_block(queries, per_query, chunk_size=None):
    """Candidates per block: ``chunk_size``, or enough for :data:`BLOCK_ELEMENTS` (at least
    :data:`MIN_CANDIDATES`)."""
    if chunk_size is not None:
        return chunk_size
    return max(MIN_CANDIDATES, BLOCK_ELEMENTS // max(queries * per_query, 1))


class Precision:
    """How the blocks of one group of queries are computed (see the module's docstring).

    Float32 queries ``x`` without autograd (``refinable``): float32 distances, refined where the bound
    asks for it. Where refining pair by pair would cost more than the block (:data:`WHOLE_BLOCK`),
    the block is computed in float64 instead, and so are the next ones, which ask again whether
    float32 would do, at doubling intervals while the answer is no (the early blocks of a
    small-sigma call, before the running maximum settles, have many candidates near it;
    image-sized windows at large sigma have them in every block). Once no query pixel is
    imprecise, none will be (the running maximum only grows), and nothing more is checked.
    Distances that come in float64 although float32 was asked (windows clipped to the image,
    summed from float64 prefix sums) need nothing. Otherwise: float64 throughout.
    """

    def __init__(self, x):
        self.refinable = x.dtype == torch.float32 and not (torch.is_grad_enabled() and x.requires_grad)
        self.dtype = torch.float32 if self.refinable else torch.float64
        self.skip = self.interval = 0  # float64 blocks left before asking again; the interval

    def refine(self, part, candidates, distances, new_max, scale, block_max=None):
        """:meth:`WindowDistances.refine` of a block of ``self.dtype`` distances, or None; sets the
        dtype of the next block."""
        if not self.refinable or distances.dtype != self.dtype:
            return None
        if self.skip:
            self.skip -= 1
            return None
        if not part.imprecise(new_max).any():
            self.refinable, self.dtype = False, torch.float32
            return None
        refined = part.refine(candidates, distances, new_max, scale, block_max)
        if refined is not WHOLE_BLOCK:
            self.interval = 0
        elif self.dtype == torch.float64:  # asked again, still float64: ask half as often
            self.interval = max(1, 2 * self.interval)
            self.skip = self.interval
        self.dtype = torch.float64 if refined is WHOLE_BLOCK else torch.float32
        return refined

    def block(self, part, acc, candidates, distances_of, scale):
        """One block's distances for ``acc.add``, their largest logits, the running maximum with
        them and their :class:`Refinement` (or None); ``distances_of(dtype)`` computes them
        (masked if need be). At the refined pixels the block's maximum is that of the exact logits."""
        distances = distances_of(self.dtype)
        block_max = acc.block_max(distances, 3, scale)
        refined = self.refine(part, candidates, distances, acc.updated_max(block_max), scale, block_max)
        if refined is WHOLE_BLOCK:
            if distances.dtype != torch.float64:
                distances = distances_of(torch.float64)
                block_max = acc.block_max(distances, 3, scale)
            refined = None
        elif refined is not None:
            block_max = refined.exact_max(block_max)
        return distances, block_max, acc.updated_max(block_max), refined


def window_softmax(x, sigma, blocks, size, padding):
    """``sum_j softmax_j(-d[n, p, j] / (2 sigma^2)) c_j[:, p]`` for every query and pixel.

    Parameters
    ----------
    x : Tensor of shape (n, C, H, W)
    sigma : float
    blocks : callable ``(queries, workspace) -> iterable`` of candidate blocks ``(C, H, W, c)``
        (the centre values are the candidates' own pixels), or of pairs ``(block, mask)`` with a
        bool mask (H, W, c) of the candidates each pixel may use (each pixel must have one in
        the first block), sized for ``queries`` queries at a time; ``workspace`` is a
        :class:`Workspace` to make each block in (it is used before the next is asked for), or
        None under autograd
    size : int, odd window side P (windows centred on every pixel)
    padding : "zeros" or "circular"

    Returns
    -------
    Tensor of the shape of ``x``. Float32 queries get float32 distances, made exact where their
    rounding could matter (see the module's docstring); float64 and autograd, float64.
    """
    n, c, h, w = x.shape
    pad = size // 2
    step = query_blocks(n, (h + 2 * pad) * (w + 2 * pad))
    parts = [WindowDistances(x[start:start + step], size, pad, padding) for start in range(0, n, step)]
    accs = [StreamingSoftmax((len(part.x), h, w, 1), torch.float64, x.device, layout="pair", weight_dtype=x.dtype)
            for part in parts]
    scale = -0.5 / sigma**2
    grad = torch.is_grad_enabled() and x.requires_grad
    precisions = [Precision(x) for _ in parts]
    for block in blocks(step, None if grad else Workspace()):
        cand, mask = block if isinstance(block, tuple) else (block, None)
        values = cand.to(x.dtype)
        for part, acc, precision in zip(parts, accs, precisions):
            def distances_of(dtype, part=part):
                distances = part(cand, dtype)
                if mask is None:
                    return distances
                return distances.masked_fill(~mask, torch.inf) if grad else distances.masked_fill_(~mask, torch.inf)

            distances, block_max, new_max, refined = precision.block(part, acc, cand, distances_of, scale)

            def sums(weights):
                if mask is not None:
                    weights = weights * mask if grad else weights.mul_(mask)
                num = torch.stack([torch.linalg.vecdot(weights, values[j]) for j in range(c)], -1)
                den = weights.sum(-1, keepdim=True)
                if refined is not None:
                    exact = refined.weights(new_max, acc.floor, x.dtype)
                    num, den = refined.put_sums(exact, num, values), refined.put_sums(exact, den)
                return num, den

            acc.add(distances, 3, sums, scale=scale, block_max=block_max)
    return torch.cat([acc.mean(x.dtype) for acc in accs]).permute(0, 3, 1, 2)
