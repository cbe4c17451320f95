"""One rank of the sharded-denoiser tests (``tests/core/test_distributed.py``), run as a script:

    python shard_worker.py RANK WORLD FOLDER

It joins a gloo group (file rendezvous in FOLDER), loads its shard of every denoiser saved in
``FOLDER/spec.pt``, denoises the shared queries (and, through GatheredQueries, its own rows), calls
the ELS / bbELS kernels on its rows of the training images by both of their paths, and saves what
it got as ``FOLDER/out-WORLD-RANK.pt``.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

import analytic_denoisers as ad
from analytic_denoisers.core import distributed


def main(rank, world, folder):
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-{world}", rank=rank, world_size=world)
    spec = torch.load(folder / "spec.pt")
    rows = spec["shards"][world]
    shard = (rank, world) if rows is None else slice(*rows[rank])
    own_rows = distributed.as_shard(shard, len(spec["data"]))
    out, errors = {}, {}
    for name, (path, conditional) in spec["files"].items():
        x, sigma, y = (spec[k].float() if name.endswith("-f32") and k != "y" else spec[k] for k in ("x", "sigma", "y"))
        den = ad.load(path, shard=shard)
        out[name] = den.denoise(x, sigma, y if conditional else None)
        own = slice(rank, None, world)  # every world-th query: each rank its own rows
        out[name + "/gathered"] = distributed.GatheredQueries(den).denoise(x[own], sigma[own],
                                                                          y[own] if conditional else None)
        first = slice(0, len(x) if rank == 0 else 0)  # rank 0 all the queries, the others none
        out[name + "/first"] = distributed.GatheredQueries(den).denoise(x[first], sigma[first],
                                                                        y[first] if conditional else None)
        try:  # a rank passing other queries than the rest
            den.denoise(x + rank, sigma, y if conditional else None)
        except ValueError as err:
            errors[name] = str(err)
    try:  # every rank asks for the first shard: they overlap
        ad.load(spec["files"]["empirical"][0], shard=(0, world))
    except ValueError as err:
        errors["overlap"] = str(err)
    try:  # the last rank loads a denoiser fitted on other images
        ad.load(spec["other"] if rank == world - 1 else spec["files"]["empirical"][0], shard=(rank, world))
    except ValueError as err:
        errors["other-set"] = str(err)
    den = ad.load(spec["files"]["ls"][0], shard=(rank, world)).set_params(patch_size=3 + 2 * (rank == 1))
    try:  # rank 1 with another patch size
        den.denoise(spec["x"], spec["sigma"])
    except ValueError as err:
        errors["other-params"] = str(err)
    x, sigma = spec["x"], spec["sigma"]
    with distributed.across(distributed.Collectives()) as collectives:
        for key, (padding, size, method) in spec["kernels"].items():
            out[key] = ad.equivariant_local_score_posterior_mean(x, sigma, spec["data"][own_rows.start:own_rows.stop], size, padding=padding,
                                                                 method=method)
        out["bytes"] = torch.tensor(collectives.bytes_reduced)
    torch.save({"out": out, "errors": errors}, folder / f"out-{world}-{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]))
