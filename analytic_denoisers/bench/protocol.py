"""The benchmark protocol of DESIGN.md as one JSON-able dict: defaults, files, overrides, checks."""

import copy
import json
import os
from pathlib import Path

import torch

from .. import datasets, registry
from ..core.validation import Interval, Options, Sequence, check_scalar, check_sigmas
from ..metrics import METRICS
from ..sampling import schedules
from ..sampling.samplers import get_sampler

POSITIVE_INT, POSITIVE = Interval(int, 1), Interval(float, 0, closed="neither")
GRIDS = ("karras", "sigmas", "vp")
FINALS = ("state", "denoised")  # the sample: the sampler's last state, or the last step's x̂0
DEFAULT_REFERENCE_ENV = "ANALYTIC_DENOISERS_DEFAULT_UNET"
DEFAULT_REFERENCE = datasets.shipped("unet-default.h5")  # package data (data/ in the repository)
PROTOCOLS_DIR = datasets.shipped("protocols")  # package data (benchmarks/protocols/ in the repository)

# Every key a protocol file may set, with its default. Sections are merged key by key.
DEFAULT_PROTOCOL = {
    "description": None,         # free text: what the protocol reproduces and its source
    "dataset": "default",        # a name of analytic_denoisers.datasets
    "root": None,                # where its files are (see datasets.load)
    "train_limit": None,         # fit on the first N training images only
    "reference": None,           # a .h5, a diffusers folder or MODULE:FACTORY; None: the shipped UNet for "default"
    "reference_params": {},      # NetworkDenoiser parameters for a network reference (bench.reference)
    "methods": list(registry.METHODS),
    # per-method hyper-parameters (methods or variants, registry.NAMES): a patch_size of "snr" is
    # the data's SNR/resolution schedule; a value "calibrated" is chosen per sampling sigma
    # against the reference (the "calibration" section)
    "params": {name: {"patch_size": "snr"} for name in
               ("local-score", "els", "bbels", "patch-composite", "anchored-composite")},
    "device": None,              # None: cpu here; the CLI picks cuda when available
    "denoising": {
        "n_images": 32,
        "sigmas": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 80.0],
        "seed": 1_000_000,
        "batch_size": 32,
    },
    "sampling": {
        "n_samples": 16, "sampler": "heun", "seed": 0,
        # the grid: "karras" (steps, sigma_min, sigma_max, rho), "sigmas" (the list `sigmas`, then
        # 0) or "vp" (`steps` timesteps of the discrete VP schedule `vp`, picked as diffusers does)
        "schedule": "karras", "steps": 10, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0,
        "sigmas": None,
        "vp": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000,
               "timestep_spacing": "leading", "steps_offset": 0, "set_alpha_to_one": True},
        "clip_sample": None,     # "vp" grid with "ddim": clamp each step's x̂0 to [-c, c] (diffusers' clip_sample)
        "final": "state",        # the sample: the sampler's last "state", or the last step's x̂0 ("denoised")
        "clamp_unit": False,     # compare images as ((x + 1) / 2).clamp(0, 1) (GoldDiff's evaluation)
        "single": False,         # also the one-step variant: the reference's x̂0 at each method's own states
    },
    "gate": {"n_images": 500, "sigmas": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0], "seed": 2_000_000},
    # for hyper-parameters set to "calibrated": at each sigma of the sampling grid, the candidate
    # whose outputs best match the reference's (scales.calibrate) on n_images held-out test
    # images that follow the denoising ones, noised with seeds seed, seed + 1, ...
    "calibration": {"n_images": 4, "seed": 3_000_000, "metric": "mse",
                    "candidates": {"patch_size": list(range(3, 29, 2))}},
}
CALIBRATED = "calibrated"
# sections whose keys are free (merged as given) rather than checked against the defaults
FREE_SECTIONS = ("reference_params", "params")
FREE_SUBSECTIONS = ("candidates",)  # merged key by key, each value replaced as a whole


def shipped_protocols():
    """Names of the protocol files that ship with the package (``benchmarks/protocols/``)."""
    return sorted(p.stem for p in PROTOCOLS_DIR.glob("*.json"))


def protocol_file(spec):
    """The path of a protocol: ``spec`` itself, or the shipped protocol named ``spec``."""
    path = Path(spec)
    shipped = PROTOCOLS_DIR / f"{spec}.json"
    return shipped if not path.exists() and path.name == str(spec) and shipped.is_file() else path


def make_protocol(overrides=None, path=None):
    """The default protocol, updated by a JSON file, then by ``overrides`` (a dict).

    ``path`` is a protocol file, or the name of a shipped one (:func:`shipped_protocols`:
    ``lukoianov-ddim10``, ``golddiff-ddim10``, ``kamb``, ``edm-heun``, ...). Unknown keys are
    errors, so a typo never silently falls back to a default.
    """
    protocol = copy.deepcopy(DEFAULT_PROTOCOL)
    layers = []
    if path is not None:
        path = protocol_file(path)
        try:
            layers.append(json.loads(path.read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such protocol file; shipped protocols: "
                                    f"{', '.join(shipped_protocols())}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    layers.append(overrides or {})
    for layer in layers:
        _merge(protocol, layer, "")
    _check_protocol(protocol)
    return protocol


def _merge(protocol, layer, where):
    """Update ``protocol`` in place with ``layer``: nested objects key by key, unknown keys refused."""
    if not isinstance(layer, dict):
        what = f"protocol section {where[:-1]!r}" if where else "a protocol"
        raise ValueError(f"{what} must be an object, got {layer!r}")
    for key, value in layer.items():
        if key not in protocol:
            raise ValueError(f"unknown protocol key {where + key!r}; known{' in ' + repr(where[:-1]) if where else ''}: "
                             f"{sorted(protocol)}")
        if key in FREE_SECTIONS and not where:
            if not isinstance(value, dict):
                raise ValueError(f"protocol section {key!r} must be an object, got {value!r}")
            for name, item in value.items():  # params: per method, then per hyper-parameter
                if key == "reference_params":
                    protocol[key][name] = copy.deepcopy(item)
                elif not isinstance(item, dict):
                    raise ValueError(f"params of {name!r} must be an object, got {item!r}")
                else:
                    protocol[key].setdefault(name, {}).update(copy.deepcopy(item))
        elif key in FREE_SUBSECTIONS and where:
            if not isinstance(value, dict):
                raise ValueError(f"protocol section {where + key!r} must be an object, got {value!r}")
            protocol[key].update(copy.deepcopy(value))
        elif isinstance(protocol[key], dict):
            _merge(protocol[key], value, f"{where}{key}.")
        else:
            protocol[key] = copy.deepcopy(value)


def _check_protocol(p):
    unknown = [m for m in p["methods"] if m not in registry.NAMES]
    if unknown or not p["methods"] or len(set(p["methods"])) < len(p["methods"]):
        raise ValueError(f"methods must be a non-empty list of distinct names of {sorted(registry.NAMES)}, "
                         f"got {p['methods']!r}")
    stray = set(p["params"]) - set(registry.NAMES)
    if stray:
        raise ValueError(f"params given for unknown methods {sorted(stray)}")
    for name, params in p["params"].items():
        registry.check_param_names(registry.METHODS[registry.method_of(name)[0]], params, name)
    cal = p["calibration"]
    check_scalar(cal["n_images"], "calibration.n_images", POSITIVE_INT)
    check_scalar(cal["seed"], "calibration.seed", Interval(int, 0))
    check_scalar(cal["metric"], "calibration.metric", Options(*METRICS))
    for name in p["methods"]:
        for key, value in p["params"].get(name, {}).items():
            if value == CALIBRATED and key not in cal["candidates"]:
                raise ValueError(f"{name}.{key}={CALIBRATED!r} needs candidates: set calibration.candidates.{key} "
                                 f"(candidates are given for {sorted(cal['candidates'])})")
    for key, values in cal["candidates"].items():
        check_scalar(values, f"calibration.candidates.{key}", Sequence(Interval(float)))
    check_scalar(p["train_limit"], "train_limit", POSITIVE_INT, None)
    for key in ("sigma_min", "sigma_max", "rho"):
        check_scalar(p["sampling"][key], f"sampling.{key}", POSITIVE)
    for section in ("denoising", "sampling", "gate"):
        check_scalar(p[section]["seed"], f"{section}.seed", Interval(int, 0))
    get_sampler(p["sampling"]["sampler"])
    for section, key in (("denoising", "n_images"), ("denoising", "batch_size"), ("sampling", "n_samples"),
                         ("sampling", "steps"), ("gate", "n_images")):
        check_scalar(p[section][key], f"{section}.{key}", POSITIVE_INT)
    for section in ("denoising", "gate"):
        check_scalar(p[section]["sigmas"], f"{section}.sigmas", Sequence(POSITIVE))
    smp = p["sampling"]
    check_scalar(smp["schedule"], "sampling.schedule", Options(*GRIDS))
    check_scalar(smp["final"], "sampling.final", Options(*FINALS))
    for key in ("clamp_unit", "single"):
        check_scalar(smp[key], f"sampling.{key}", Options(False, True))
    check_scalar(smp["clip_sample"], "sampling.clip_sample", POSITIVE, None)
    if smp["clip_sample"] is not None and (smp["schedule"], smp["sampler"]) != ("vp", "ddim"):
        raise ValueError("sampling.clip_sample clamps the x̂0 of diffusers' DDIM step: it needs "
                         'sampling.schedule "vp" and sampling.sampler "ddim"')
    if smp["schedule"] == "sigmas" and smp["sigmas"] is None:
        raise ValueError('sampling.schedule "sigmas" needs the list sampling.sigmas')
    sampling_grid(smp)  # every other value of the grid (the list, the VP table and spacing)


def sampling_grid(smp):
    """The sampling grid of a protocol's ``sampling`` section.

    Returns a dict with ``sigmas`` (float64, decreasing: the level of each step, then where the
    last step ends) and, for a ``"vp"`` grid, ``timesteps``, ``alpha_bars`` and
    ``alpha_bars_next`` (:func:`~analytic_denoisers.sampling.schedules.ddim_alpha_bars`: what
    diffusers' DDIM steps between; sigma-native samplers step along the timesteps to 0).
    """
    if smp["schedule"] == "karras":
        return {"sigmas": schedules.karras(smp["steps"], smp["sigma_min"], smp["sigma_max"], smp["rho"])}
    if smp["schedule"] == "sigmas":
        check_scalar(smp["sigmas"], "sampling.sigmas", Sequence(POSITIVE))
        return {"sigmas": check_sigmas([*smp["sigmas"], 0.0])}
    vp = smp["vp"]
    for key in ("beta_start", "beta_end"):
        check_scalar(vp[key], f"sampling.vp.{key}", Interval(float, 0, 1, closed="neither"))
    table = schedules.vp_alpha_bars(vp["num_train_timesteps"], vp["beta_start"], vp["beta_end"], vp["beta_schedule"])
    timesteps = schedules.vp_timesteps(smp["steps"], vp["num_train_timesteps"], vp["timestep_spacing"],
                                       vp["steps_offset"])
    check_scalar(vp["set_alpha_to_one"], "sampling.vp.set_alpha_to_one", Options(False, True))
    at, to = schedules.ddim_alpha_bars(table, timesteps, vp["set_alpha_to_one"])
    if smp["sampler"] == "ddim":
        sigmas = schedules.sigma_from_alpha_bar(torch.cat([at, to[-1:]]))
    else:
        sigmas = torch.cat([schedules.sigma_from_alpha_bar(at), torch.zeros(1, dtype=torch.float64)])
    return {"sigmas": check_sigmas(sigmas), "timesteps": timesteps, "alpha_bars": at, "alpha_bars_next": to}


def reference_path(protocol):
    """The reference file of a protocol: its ``reference``, or the shipped UNet for "default"."""
    if protocol["reference"] is not None:
        return Path(protocol["reference"])
    if protocol["dataset"] != "default":
        raise ValueError(f"dataset {protocol['dataset']!r} has no shipped reference network: train one "
                         "with `analytic-denoisers train-unet --dataset ...` and pass it as reference")
    path = Path(os.environ.get(DEFAULT_REFERENCE_ENV) or DEFAULT_REFERENCE).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the shipped reference UNet is missing; it ships with the package (data/ of "
            f"the repository): reinstall the package, set ${DEFAULT_REFERENCE_ENV} to a copy of it, "
            "or retrain it with the command in data/README.md")
    return path
