"""Training sets sharded over processes (``torch.distributed``): which rows a rank holds, and the
collectives that merge each rank's partial softmax sums into the exact result on every rank.

A softmax over the training set is exactly mergeable. Rank ``r`` reduces its own rows to a
running maximum ``m_r`` of the logits and, under ``exp(l - m_r)``, a sum of weights ``W_r`` and
a weighted sum ``S_r`` per query; then

    m = max_r m_r,   W = sum_r exp(m_r - m) W_r,   S = sum_r exp(m_r - m) S_r,   D = S / W,

which is the single-process result up to the order of the additions. The kernels' streaming
softmax (:class:`~analytic_denoisers.kernels.softmax.StreamingSoftmax`) does this merge when it
is read, whenever a sharded call is active (:func:`active`): a sharded estimator enters
:func:`across` for the length of each call, so the kernels need no argument for it. Every
collective is done in float64, and every rank must make the same calls in the same order, which
the kernels guarantee when every rank denoises the same queries (checked at each call,
:meth:`Collectives.check_same`); for each rank's own queries, wrap the denoiser in
:class:`GatheredQueries`. A denoiser that is not sharded (a network, the Gaussian) splits a
batch's rows across the ranks instead: :class:`SplitQueries`.
"""

import contextlib
import contextvars
from typing import NamedTuple

import torch

MAX_DIMS = 8  # dimensions of a partial sum agreed on across ranks (see Collectives.agree_shapes)
SHARDABLE = ("the denoisers whose calls merge exactly across ranks are the empirical-optimal, PCA-locality, "
             "LS / ELS / bbELS and PSPC-Square ones")


class Shard(NamedTuple):
    """This rank's rows ``[start, stop)`` of a training set of ``total`` rows."""

    start: int
    stop: int
    total: int


def even_rows(total, rank, world):
    """``(start, stop)``: rank ``rank``'s part of ``total`` rows split into ``world`` nearly equal
    consecutive parts (the first ``total % world`` ranks get one more row)."""
    if not (isinstance(world, int) and world >= 1 and isinstance(rank, int) and 0 <= rank < world):
        raise ValueError(f"shard (rank, world) needs 0 <= rank < world, got ({rank!r}, {world!r})")
    return rank * total // world, (rank + 1) * total // world


def as_shard(shard, total):
    """A :class:`Shard` from ``(rank, world)`` (an even split) or ``slice(start, stop)`` (explicit rows,
    e.g. uneven shards), checked against ``total`` rows."""
    if isinstance(shard, slice):
        if shard.step not in (None, 1):
            raise ValueError(f"shard must be a slice of consecutive rows, got step {shard.step}")
        start, stop = shard.start or 0, total if shard.stop is None else shard.stop
        if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop <= total):
            raise ValueError(f"shard slice({shard.start}, {shard.stop}) is not within the {total} training rows")
        return Shard(start, stop, total)
    if not (isinstance(shard, tuple) and len(shard) == 2):
        raise ValueError(f"shard must be (rank, world) or slice(start, stop), got {shard!r}")
    return Shard(*even_rows(total, *shard), total)


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("a sharded denoiser needs torch.distributed initialised on every rank first: "
                           "dist.init_process_group('gloo') (CPU) or 'nccl' (GPUs), e.g. under torchrun")
    return dist


class Collectives:
    """The collectives of sharded calls on one ``torch.distributed`` process group.

    Parameters
    ----------
    group : a process group, or None for the default one (initialised by the caller)

    Attributes
    ----------
    rank, world : int, this process's rank in the group and the group's size
    bytes_reduced : int, the bytes this rank has passed to ``all_reduce`` and ``all_gather``
        so far (the payload; a ring all-reduce moves about twice that over the network)
    """

    def __init__(self, group=None):
        dist = _dist()
        self.group, self.rank, self.world = group, dist.get_rank(group), dist.get_world_size(group)
        self.bytes_reduced = 0

    def _all_reduce(self, t, op):
        dist = _dist()
        out = t.to(torch.float64, copy=True).contiguous()
        dist.all_reduce(out, op=getattr(dist.ReduceOp, op), group=self.group)
        self.bytes_reduced += out.numel() * out.element_size()
        return out

    def maximum(self, t):
        """The elementwise maximum over ranks of ``t`` (same shape on every rank), in float64."""
        return self._all_reduce(t, "MAX")

    def total(self, t):
        """The elementwise sum over ranks of ``t`` (same shape on every rank), in float64."""
        return self._all_reduce(t, "SUM")

    def check(self, shard):
        """Raise unless the ranks' shards hold ``shard.total`` rows in all (each row once, when the
        shards do not overlap)."""
        count = self.total(torch.tensor([float(shard.stop - shard.start)]))
        if count[0] != shard.total:
            raise ValueError(f"the {self.world} ranks' shards hold {int(count[0])} training rows in all, not the "
                             f"{shard.total} of the fitted set: load every rank's shard of the same file "
                             "(shard=(rank, world) with this group's rank and size)")

    def check_same(self, *tensors):
        """Raise unless every rank passed the same tensors (compared through sums and a weighted
        sum of their values, and their shapes): a sharded call merges the same queries' sums."""
        keys = []
        for t in tensors:
            t = t.detach().to(torch.float64).reshape(-1)
            ramp = torch.linspace(1, 2, len(t), dtype=torch.float64, device=t.device)
            keys += [float(len(t)), float(t.sum()), float((t * ramp).sum())]
        keys = torch.tensor(keys, dtype=torch.float64)
        if not torch.equal(self.maximum(keys), -self.maximum(-keys)):
            raise ValueError("the ranks passed different queries to a sharded denoiser: every rank must denoise "
                             "the same x, sigma and y; to denoise each rank's own queries, wrap it in "
                             "analytic_denoisers.core.distributed.GatheredQueries")

    def agree_shapes(self, shapes, count):
        """``count`` tensor shapes as every rank knows them: ``shapes`` from a rank that has them,
        or None from a rank that has none (an empty shard); they must not contradict."""
        code = torch.full((count, MAX_DIMS + 1), -1.0)  # -1: unknown here
        for k, shape in enumerate(shapes or ()):
            code[k] = 0
            code[k, 0], code[k, 1:len(shape) + 1] = len(shape), torch.tensor(shape, dtype=torch.float64)
        high, low = self.maximum(code), -self.maximum(-torch.where(code < 0, torch.inf, code))
        known = high[:, 0] >= 0
        if not bool(known.all()) or not torch.equal(high[known], low[known]):
            raise ValueError("the ranks' partial sums have different shapes: every rank must denoise the same "
                             "queries with the same hyper-parameters")
        return [tuple(int(v) for v in row[1:int(row[0]) + 1]) for row in high]

    def gather_rows(self, t):
        """Every rank's ``t`` (n_r, ...) concatenated in rank order, and this rank's rows in it (a slice)."""
        dist = _dist()
        sizes = self.total(torch.eye(self.world)[self.rank] * len(t)).long().tolist()
        padded = t.new_zeros((max(sizes), *t.shape[1:]))
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded.contiguous(), group=self.group)
        self.bytes_reduced += padded.numel() * padded.element_size() * self.world
        start = sum(sizes[:self.rank])
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]), slice(start, start + len(t))


_ACTIVE = contextvars.ContextVar("analytic_denoisers_collectives", default=None)


def active():
    """The :class:`Collectives` of the sharded call in progress, or None (a single-process call)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def across(collectives):
    """Make ``collectives`` the sharded call in progress for the kernels (None: a local call)."""
    token = _ACTIVE.set(collectives)
    try:
        yield collectives
    finally:
        _ACTIVE.reset(token)


def mean_rows(rows):
    """``rows.mean(0)`` of rows (M, ...), over every rank's rows in a sharded call (the kernels
    centre on it: every rank must use the same centre)."""
    collectives = active()
    if collectives is None:
        return rows.mean(0)
    flat = rows.flatten(1)
    sums = collectives.total(torch.cat([flat.sum(0, dtype=torch.float64), flat.new_ones(1, dtype=torch.float64) * len(rows)]))
    return (sums[:-1] / sums[-1]).to(rows.dtype).reshape(rows.shape[1:])


def total_rows(count):
    """``count`` summed over every rank in a sharded call (the whole training set's size), else ``count``."""
    collectives = active()
    return count if collectives is None else int(collectives.total(torch.tensor([float(count)]))[0])


def sum_over_shards(*tensors):
    """The tensors (same shapes on every rank) summed over the ranks in a sharded call (in float64,
    returned in their dtypes), else as they are."""
    collectives = active()
    if collectives is None:
        return tensors
    flat = collectives.total(torch.cat([t.reshape(-1).to(torch.float64) for t in tensors]))
    return tuple(part.reshape(t.shape).to(t.dtype) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors))


class GatheredQueries:
    """A sharded denoiser called with each rank's own queries (data-parallel sampling).

    A sharded denoiser needs the same queries on every rank. This wrapper gathers every rank's
    ``(x, sigma, y)`` (any number of rows per rank, zero included), denoises all of them on every
    rank (each scanning its shard) and returns this rank's rows. Every rank must call it the same
    number of times.

    Parameters
    ----------
    denoiser : a sharded denoiser (``est.shard(...)`` or ``ad.load(path, shard=...)``)
    """

    def __init__(self, denoiser):
        self.denoiser = denoiser

    def denoise(self, x, sigma, y=None):
        collectives = self.denoiser._shards[1]
        x = torch.as_tensor(x)
        all_x, own = collectives.gather_rows(x)
        all_sigma, _ = collectives.gather_rows(_per_row(sigma, len(x), x))
        all_y = None if y is None else collectives.gather_rows(_per_row(y, len(x), x))[0]
        return self.denoiser.denoise(all_x, all_sigma, all_y)[own]

    def __call__(self, x, sigma, y=None):
        return self.denoise(x, sigma, y)


def _per_row(t, n, like):
    """``sigma`` or ``y`` (a number or one per row) as a tensor of ``n`` rows."""
    t = torch.as_tensor(t, device=like.device)
    return (t.to(like.dtype) if t.is_floating_point() else t).reshape(-1).expand(n)


class SplitQueries:
    """A denoiser whose calls are split across ranks by rows (data parallel): every rank passes the
    same batch, denoises its part of the rows (:func:`even_rows`) and gets the whole result,
    gathered. For denoisers that hold no training set to shard (networks, the Gaussian).

    Parameters
    ----------
    denoiser : any denoiser (``denoise(x, sigma, y=None)``)
    collectives : :class:`Collectives`
    """

    def __init__(self, denoiser, collectives):
        self.denoiser, self.collectives = denoiser, collectives

    def denoise(self, x, sigma, y=None):
        start, stop = even_rows(len(x), self.collectives.rank, self.collectives.world)
        sigma = _per_row(sigma, len(x), x)
        part = None if y is None else _per_row(y, len(x), x)[start:stop]
        own = self.denoiser.denoise(x[start:stop], sigma[start:stop], part) if stop > start else x[:0]
        return self.collectives.gather_rows(own.to(x.dtype))[0]

    def __call__(self, x, sigma, y=None):
        return self.denoise(x, sigma, y)
