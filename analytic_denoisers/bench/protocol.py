"""The benchmark protocol of DESIGN.md as one JSON-able dict: defaults, files, overrides, checks."""

import copy
import json
import os
from pathlib import Path

from .. import datasets, registry
from ..core.validation import Interval, Sequence, check_scalar
from ..sampling.samplers import get_sampler

POSITIVE_INT, POSITIVE = Interval(int, 1), Interval(float, 0, closed="neither")
DEFAULT_REFERENCE_ENV = "ANALYTIC_DENOISERS_DEFAULT_UNET"
DEFAULT_REFERENCE = datasets.shipped("unet-default.h5")  # package data (data/ in the repository)

# Every key a protocol file may set, with its default. Nested sections are merged key by key.
DEFAULT_PROTOCOL = {
    "dataset": "default",        # a name of analytic_denoisers.datasets
    "root": None,                # where its files are (see datasets.load)
    "train_limit": None,         # fit on the first N training images only
    "reference": None,           # a .h5, a diffusers folder or MODULE:FACTORY; None: the shipped UNet for "default"
    "reference_params": {},      # NetworkDenoiser parameters for a network reference (bench.reference)
    "methods": list(registry.METHODS),
    # per-method hyper-parameters; a patch_size of "snr" is the data's SNR/resolution schedule
    "params": {"local-score": {"patch_size": "snr"}, "patch-composite": {"patch_size": "snr"}},
    "device": None,              # None: cpu here; the CLI picks cuda when available
    "denoising": {
        "n_images": 32,
        "sigmas": [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 80.0],
        "seed": 1_000_000,
        "batch_size": 32,
    },
    "sampling": {"n_samples": 16, "steps": 10, "sampler": "heun", "sigma_min": 0.002,
                 "sigma_max": 80.0, "rho": 7.0, "seed": 0},
    "gate": {"n_images": 500, "sigmas": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0], "seed": 2_000_000},
}


def make_protocol(overrides=None, path=None):
    """The default protocol, updated by a JSON file at ``path``, then by ``overrides`` (a dict).

    Unknown keys are errors, so a typo never silently falls back to a default.
    """
    protocol = copy.deepcopy(DEFAULT_PROTOCOL)
    layers = []
    if path is not None:
        try:
            layers.append(json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such protocol file") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from None
    layers.append(overrides or {})
    for layer in layers:
        if not isinstance(layer, dict):
            raise ValueError(f"a protocol must be a JSON object, got {type(layer).__name__}")
        for key, value in layer.items():
            if key not in protocol:
                raise ValueError(f"unknown protocol key {key!r}; known: {sorted(protocol)}")
            if isinstance(protocol[key], dict):
                if not isinstance(value, dict):
                    raise ValueError(f"protocol section {key!r} must be an object, got {value!r}")
                if key == "reference_params":  # any NetworkDenoiser parameter
                    protocol[key].update(copy.deepcopy(value))
                    continue
                if key == "params":  # merged per method, then per hyper-parameter
                    for method, params in value.items():
                        if not isinstance(params, dict):
                            raise ValueError(f"params of {method!r} must be an object, got {params!r}")
                        protocol["params"].setdefault(method, {}).update(copy.deepcopy(params))
                    continue
                unknown = set(value) - set(protocol[key])
                if unknown:
                    raise ValueError(f"unknown keys {sorted(unknown)} in protocol section {key!r}; "
                                     f"known: {sorted(protocol[key])}")
                protocol[key].update(value)
            else:
                protocol[key] = copy.deepcopy(value)
    _check_protocol(protocol)
    return protocol


def _check_protocol(p):
    unknown = [m for m in p["methods"] if m not in registry.METHODS]
    if unknown or not p["methods"]:
        raise ValueError(f"methods must be a non-empty list of {sorted(registry.METHODS)}, got {p['methods']!r}")
    stray = set(p["params"]) - set(registry.METHODS)
    if stray:
        raise ValueError(f"params given for unknown methods {sorted(stray)}")
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
