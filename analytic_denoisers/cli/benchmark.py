"""``analytic-denoisers bench``: the benchmark protocol, every method against the reference."""

import argparse
import sys
import time

from .. import bench, registry
from ..bench.protocol import FINALS, GRIDS
from ..sampling import schedules
from . import options


def add_parser(sub):
    p = sub.add_parser(
        "bench", help="run the benchmark protocol: every method against the reference UNet",
        description="Fit every chosen method on the training images, then compare it with the "
                    "reference network (default: the UNet shipped in data/) on held-out noisy test "
                    "images over a sigma grid (denoiser agreement) and from shared initial noise "
                    "(sampler agreement). Prints the reference's quality gate; writes "
                    "results.json, denoising.csv, sampling.csv, results.md, samples.png and "
                    "metrics.png to --out. Options override the protocol file, which overrides "
                    "the defaults of analytic_denoisers.bench.DEFAULT_PROTOCOL.")
    p.add_argument("--protocol", help="protocol JSON file (keys of DEFAULT_PROTOCOL), or the name of a shipped "
                                      f"one: {', '.join(bench.shipped_protocols())}")
    options.add_data(p, split=False, default=None, limit_help="fit on the first LIMIT training images only")
    options.add_reference(p)
    p.add_argument("--methods", help=f"comma-separated, from {','.join(sorted(registry.NAMES))} (default: "
                                     f"{','.join(registry.METHODS)})")
    options.add_params(p, 'pca-locality.threshold=0.02; patch_size="snr" is the SNR schedule, '
                          'els.patch_size="calibrated" calibrates it against the reference', per_method=True)
    group = p.add_argument_group("calibration (of hyper-parameters set to \"calibrated\")")
    group.add_argument("--calibration-images", type=options.positive_int,
                       help="held-out test images, after the denoising ones (default 4)")
    group.add_argument("--calibration-candidates", type=options.key_value, action="append", default=[],
                       metavar="KEY=LIST", help="candidates of a hyper-parameter, e.g. patch_size=[3,5,7] "
                                                "(default patch_size=[3,5,...,27]; repeatable)")
    group = p.add_argument_group("denoiser agreement")
    group.add_argument("--n-images", type=options.positive_int, help="test images (default 32)")
    group.add_argument("--sigmas", type=options.number_list(float), help="comma-separated sigma grid")
    group.add_argument("--denoise-seed", type=int, help="test image i uses noise seed DENOISE_SEED + i")
    options.add_sampling(p, n=None, steps=None, schedule=False)
    grid = p.add_argument_group("sampling grid (default: the protocol's)")
    grid.add_argument("--schedule", choices=GRIDS, help='"karras" (--sigma-min, --sigma-max, --rho), "sigmas" '
                      '(--sampling-sigmas) or "vp" (--steps timesteps of a VP table, picked as diffusers does)')
    grid.add_argument("--sampling-sigmas", type=options.number_list(float), help="comma-separated decreasing sigmas")
    for flag in ("sigma-min", "sigma-max", "rho"):
        grid.add_argument(f"--{flag}", type=float, help="of the Karras schedule")
    grid.add_argument("--timestep-spacing", choices=schedules.TIMESTEP_SPACINGS, help="of the VP timesteps")
    grid.add_argument("--clip-sample", type=float, help="VP DDIM: clamp each step's x̂0 to [-C, C] (diffusers' clip_sample)")
    grid.add_argument("--final", choices=FINALS, help="the sample: the last state or the last x̂0")
    grid.add_argument("--single", action=argparse.BooleanOptionalAction,
                      help="also the one-step variant: the reference denoises each method's own states")
    grid.add_argument("--clamp-unit", action=argparse.BooleanOptionalAction,
                      help="compare samples as ((x + 1) / 2).clamp(0, 1)")
    gate = p.add_argument_group("quality gate")
    gate.add_argument("--gate-images", type=options.positive_int, help="held-out test images (default 500)")
    gate.add_argument("--gate-sigmas", type=options.number_list(float), help="comma-separated sigmas (default 0.05,...,5)")
    options.add_device(p)
    options.add_output(p, "output folder", kind="folder", default="out/bench")
    p.set_defaults(func=run)


def overrides(args):
    """The protocol keys that the options set (those left out keep the protocol's values)."""
    found = {key: getattr(args, key) for key in ("dataset", "root", "reference", "device")
             if getattr(args, key) is not None}
    if args.reference_param:
        found["reference_params"] = dict(args.reference_param)
    if args.limit:
        found["train_limit"] = args.limit
    if args.methods:
        found["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    sections = {"denoising": dict(n_images=args.n_images, sigmas=args.sigmas, seed=args.denoise_seed),
                "sampling": dict(n_samples=args.n, steps=args.steps, sampler=args.sampler, seed=args.seed,
                                 schedule=args.schedule, sigmas=args.sampling_sigmas, sigma_min=args.sigma_min,
                                 sigma_max=args.sigma_max, rho=args.rho, clip_sample=args.clip_sample,
                                 final=args.final, single=args.single, clamp_unit=args.clamp_unit),
                "gate": dict(n_images=args.gate_images, sigmas=args.gate_sigmas),
                "calibration": dict(n_images=args.calibration_images,
                                    candidates=dict(args.calibration_candidates) or None)}
    if args.sampling_sigmas and not args.schedule:
        sections["sampling"]["schedule"] = "sigmas"
    if args.timestep_spacing:
        sections["sampling"]["vp"] = {"timestep_spacing": args.timestep_spacing}
    for section, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            found[section] = values
    for method, name, value in args.param:
        found.setdefault("params", {}).setdefault(method, {})[name] = value
    return found


def run(args):
    protocol = bench.make_protocol(overrides(args), path=args.protocol)
    start = time.perf_counter()
    with options.process_group(protocol["device"]) as (collectives, device):
        protocol["device"] = str(device)
        lead = collectives is None or collectives.rank == 0  # under torchrun: rank 0 reports and writes
        results = bench.run(protocol, collectives=collectives, progress=lead,
                            log=lambda line: print(line, file=sys.stderr) if lead else None)
    if not lead:
        return 0
    paths = bench.write(results, args.out, command=options.command_line(args))
    print(bench.gate_text(results["gate"]).splitlines()[0])
    print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.0f} s")
    return 0
