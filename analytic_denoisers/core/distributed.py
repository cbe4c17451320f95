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
all-reduce is made in float64 (a merge takes two: the maxima, then the rescaled sums), and every
rank must make the same calls in the same order, which
the kernels guarantee when every rank denoises the same queries (checked at each call,
:meth:`Collectives.check_same`); for each rank's own queries, wrap the denoiser in
:class:`GatheredQueries`. A denoiser that is not sharded (a network, the Gaussian) splits a
batch's rows across the ranks instead: :class:`SplitQueries`.
"""

import contextlib
import hashlib
import contextvars
from typing import NamedTuple

import torch

MAX_DIMS = 8  # dimensions of a partial sum agreed on across ranks (see Collectives.merge_maxima)
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


def digest(text):
    """A number that identifies ``text`` (the first 48 bits of its SHA-256; exact in float64)."""
    return float(int(hashlib.sha256(str(text).encode()).hexdigest()[:12], 16))


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("a sharded denoiser needs torch.distributed initialised on every rank first: "
                           "dist.init_process_group('gloo') (CPU) or 'nccl' (GPUs), e.g. under torchrun")
    return dist


class Collectives:
    """The collectives of sharded calls on one ``torch.distributed`` process group.

    Every all-reduce is made in float64, on the group's device (the current CUDA device for an
    NCCL group, else the CPU), and its result is returned on the device of its input.

    Parameters
    ----------
    group : a process group, or None for the default one (initialised by the caller)

    Attributes
    ----------
    rank, world : int, this process's rank in the group and the group's size
    device : torch.device the collectives run on
    bytes_reduced, calls : int, the bytes this rank has passed to ``all_reduce`` and
        ``all_gather`` so far (the payload; a ring all-reduce moves about twice that over the
        network), and the number of those collectives
    """

    def __init__(self, group=None):
        dist = _dist()
        self.group, self.rank, self.world = group, dist.get_rank(group), dist.get_world_size(group)
        nccl = "nccl" in str(dist.get_backend(group)).lower()
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self.bytes_reduced = self.calls = 0

    def _all_reduce(self, t, op):
        dist = _dist()
        out = t.to(self.device, torch.float64, copy=True).contiguous()
        dist.all_reduce(out, op=getattr(dist.ReduceOp, op), group=self.group)
        self.bytes_reduced += out.numel() * out.element_size()
        self.calls += 1
        return out.to(t.device)

    def maximum(self, t):
        """The elementwise maximum over ranks of ``t`` (same shape on every rank), in float64."""
        return self._all_reduce(t, "MAX")

    def total(self, t):
        """The elementwise sum over ranks of ``t`` (same shape on every rank), in float64."""
        return self._all_reduce(t, "SUM")

    def extremes(self, t):
        """``(max, min)`` over ranks of ``t`` elementwise, in one all-reduce."""
        both = self.maximum(torch.cat([t.reshape(-1), -t.reshape(-1)]).to(torch.float64))
        return both[:t.numel()].reshape(t.shape), -both[t.numel():].reshape(t.shape)

    def per_rank(self, values):
        """Every rank's ``values`` (a list of numbers), as a (world, len) float64 tensor."""
        mine = torch.zeros(self.world, len(values), dtype=torch.float64)
        mine[self.rank] = torch.tensor(values, dtype=torch.float64)
        return self.total(mine)

    def check(self, shard, fingerprint):
        """Raise (on every rank) unless the ranks' shards are of the same fitted set (its size and
        ``fingerprint``) and tile its ``shard.total`` rows: each row held by exactly one rank."""
        table = self.per_rank([shard.start, shard.stop, shard.total, digest(fingerprint)])
        if not bool((table[:, 2:] == table[0, 2:]).all()):
            raise ValueError(f"the {self.world} ranks hold shards of different training sets (sizes "
                             f"{[int(n) for n in table[:, 2].tolist()]}, or other fingerprints): load the same file "
                             "on every rank")
        rows = sorted((int(a), int(b)) for a, b, _, _ in table.tolist() if b > a)
        ends = [0] + [b for _, b in rows]
        if any(a != end for (a, _), end in zip(rows, ends)) or ends[-1] != shard.total:
            raise ValueError(f"the {self.world} ranks' shards {rows} do not cover the {shard.total} training rows "
                             "each exactly once: every rank loads its own shard of the same file, "
                             "shard=(rank, world) with this group's rank and size, or slices that tile the rows")

    def raise_if_any(self, error):
        """Every rank learns whether any rank failed (``error``: this rank's exception or None):
        the failing ranks raise their own error, the others a RuntimeError naming them, so that no
        rank is left waiting in a collective."""
        failed = self.per_rank([error is not None])[:, 0].nonzero().flatten().tolist()
        if error is not None:
            raise error
        if failed:
            raise RuntimeError(f"rank(s) {failed} of the group failed (see their error); this rank stops too")

    def check_same(self, *tensors, tags=()):
        """Raise unless every rank passed the same tensors (compared through sums and a weighted
        sum of their values, and their shapes) and the same ``tags`` (numbers, e.g. a
        :func:`digest` of the hyper-parameters): a sharded call merges the same queries' sums,
        made by the same machine, in partial sums of the same shapes."""
        keys = [float(t) for t in tags]
        for t in tensors:
            t = t.detach().to(torch.float64).reshape(-1)
            ramp = torch.linspace(1, 2, len(t), dtype=torch.float64, device=t.device)
            keys += [float(len(t)), float(t.sum()), float((t * ramp).sum())]
        high, low = self.extremes(torch.tensor(keys, dtype=torch.float64))
        if not torch.equal(high, low):
            raise ValueError("the ranks passed different queries to a sharded denoiser, or hold it with different "
                             "hyper-parameters: every rank must denoise the same x, sigma and y with the same "
                             "denoiser; to denoise each rank's own queries, wrap it in "
                             "analytic_denoisers.core.distributed.GatheredQueries")

    def merge_maxima(self, run_max, shapes, count, flag=False):
        """One all-reduce for a softmax merge: the elementwise maximum over ranks of ``run_max``,
        the ``count`` shapes of the partial sums (``shapes`` from a rank that has them, None from a
        rank with an empty shard; they must agree), and whether any rank raised ``flag``. The
        ranks' ``run_max`` must have one shape: the call's :meth:`check_same` of the queries and
        hyper-parameters ensures it (else the all-reduce itself fails).

        Returns ``(merged maximum, shapes, any flag)``."""
        code = torch.full((count, MAX_DIMS + 1), -1.0, dtype=torch.float64)  # -1: unknown here
        for k, shape in enumerate(shapes or ()):
            code[k] = 0
            code[k, 0], code[k, 1:len(shape) + 1] = len(shape), torch.tensor(shape, dtype=torch.float64)
        low_code = torch.where(code < 0, torch.inf, code)  # the minimum over the ranks that know
        packed = torch.cat([code.reshape(-1), -low_code.reshape(-1), torch.tensor([float(flag)], dtype=torch.float64)])
        packed = self.maximum(torch.cat([packed.to(run_max.device), run_max.reshape(-1).to(torch.float64)]))
        n = code.numel()
        high, low = packed[:n].reshape(code.shape).cpu(), -packed[n:2 * n].reshape(code.shape).cpu()
        known = high[:, 0] >= 0
        if not bool(known.all()) or not torch.equal(high[known], low[known]):
            raise ValueError("the ranks' partial sums have different shapes: every rank must denoise the same "
                             "queries with the same hyper-parameters")
        found = [tuple(int(v) for v in row[1:int(row[0]) + 1]) for row in high]
        return packed[2 * n + 1:].reshape(run_max.shape), found, bool(packed[2 * n] > 0)

    def gather_rows(self, t):
        """Every rank's ``t`` (n_r, ...) concatenated in rank order, and this rank's rows in it (a slice)."""
        dist = _dist()
        sizes = [int(v) for v in self.per_rank([len(t)])[:, 0].tolist()]
        padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=self.device)
        padded[:len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        self.bytes_reduced += padded.numel() * padded.element_size() * self.world
        self.calls += 1
        start = sum(sizes[:self.rank])
        return torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(t.device), slice(start, start + len(t))


def collectives_after(error, group=None):
    """The :class:`Collectives` of ``group``, once every rank knows whether any failed a local step
    (``error``: this rank's exception or None; see :meth:`Collectives.raise_if_any`). Without a
    process group no other rank waits: ``error`` itself is raised, if any."""
    try:
        collectives = Collectives(group)
    except RuntimeError:
        if error is not None:
            raise error from None
        raise
    collectives.raise_if_any(error)
    return collectives


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
    if active() is None:
        return rows.mean(0)
    sums, count = sum_over_shards(rows.flatten(1).sum(0, dtype=torch.float64),
                                  torch.tensor([float(len(rows))], device=rows.device))
    return (sums / count).to(rows.dtype).reshape(rows.shape[1:])


def total_rows(count):
    """``count`` summed over every rank in a sharded call (the whole training set's size), else ``count``."""
    return int(sum_over_shards(torch.tensor([float(count)]))[0])


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
        if getattr(denoiser, "_shards", None) is None:
            raise ValueError(f"GatheredQueries wraps a sharded denoiser (est.shard((rank, world)) or ad.load(path, "
                             f"shard=...)), got an unsharded {type(denoiser).__name__}")
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
        x = torch.as_tensor(x)
        start, stop = even_rows(len(x), self.collectives.rank, self.collectives.world)
        sigma = _per_row(sigma, len(x), x)
        part = None if y is None else _per_row(y, len(x), x)[start:stop]
        own = self.denoiser.denoise(x[start:stop], sigma[start:stop], part) if stop > start else x[:0]
        return self.collectives.gather_rows(own.to(x.dtype))[0]

    def __call__(self, x, sigma, y=None):
        return self.denoise(x, sigma, y)
