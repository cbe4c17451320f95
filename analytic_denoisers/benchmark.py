"""The benchmark protocol of DESIGN.md: every method against one reference network.

:func:`run` fits each chosen method on the training images that the reference (normally the
trained UNet) was trained on, and measures:

* **denoiser agreement**: held-out test images ``x0`` and ``x = x0 + sigma * eps`` on a sigma
  grid. Image i uses seed ``seed + i`` for its ``eps``, the same at every sigma and for every
  method. ``D_method(x, sigma)`` is compared with ``D_ref(x, sigma)``, and with ``x0`` (the
  method's own denoising MSE);
* **sampler agreement**: one seeded initial noise per sample, and the same sampler and steps for
  every method. The final samples and the x̂0 of every step are compared with the reference's;
* **the quality gate**: the reference's own denoising MSE on held-out images must be below the
  Gaussian denoiser's at every gate sigma; otherwise it is under-trained and agreement with it
  means little.

Metrics are those of :mod:`analytic_denoisers.metrics`, with time per call and peak memory.
:func:`write` saves ``results.json``, ``denoising.csv``, ``sampling.csv``, ``results.md``,
``samples.png`` and ``metrics.png`` in one folder.
"""

import copy
import csv
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__, datasets, io, metrics, registry, scales, schedules
from .base import data_fingerprint
from .sampling import CountingDenoiser, get_sampler, sample, seeded_noise
from .viz import pyplot, save_figure, save_labelled_rows

DEFAULT_REFERENCE_ENV = "ANALYTIC_DENOISERS_DEFAULT_UNET"
DEFAULT_REFERENCE = datasets.DEFAULT_DIR.parent / "unet-default.h5"

# Every key a protocol file may set, with its default. Nested sections are merged key by key.
DEFAULT_PROTOCOL = {
    "dataset": "default",        # a name of analytic_denoisers.datasets
    "root": None,                # where its files are (see datasets.load)
    "train_limit": None,         # fit on the first N training images only
    "reference": None,           # a saved denoiser (.h5); None: the shipped UNet for "default"
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


# ----------------------------------------------------------------------------- protocol

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
    limit = p["train_limit"]
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"train_limit must be a positive int or null, got {limit!r}")
    for key in ("sigma_min", "sigma_max", "rho"):
        value = p["sampling"][key]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"sampling.{key} must be a positive number, got {value!r}")
    for section in ("denoising", "sampling", "gate"):
        seed = p[section]["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{section}.seed must be an int >= 0, got {seed!r}")
    get_sampler(p["sampling"]["sampler"])
    for section, key in (("denoising", "n_images"), ("denoising", "batch_size"), ("sampling", "n_samples"),
                         ("sampling", "steps"), ("gate", "n_images")):
        value = p[section][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{section}.{key} must be a positive int, got {value!r}")
    for section in ("denoising", "gate"):
        sig = p[section]["sigmas"]
        if not sig or not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in sig):
            raise ValueError(f"{section}.sigmas must be a non-empty list of positive numbers, got {sig!r}")


def reference_path(protocol):
    """The reference file of a protocol: its ``reference``, or the shipped UNet for "default"."""
    if protocol["reference"] is not None:
        return Path(protocol["reference"])
    if protocol["dataset"] != "default":
        raise ValueError(f"dataset {protocol['dataset']!r} has no shipped reference network: train one "
                         "with `analytic-denoisers train-unet --dataset ...` and pass it as reference")
    path = Path(os.environ.get(DEFAULT_REFERENCE_ENV) or DEFAULT_REFERENCE)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: the shipped reference UNet is missing; it is in data/ of the repository "
            f"(set ${DEFAULT_REFERENCE_ENV} to its path for a non-editable install), or retrain "
            "it with the command in data/README.md")
    return path


# ----------------------------------------------------------------------------- measuring

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _release_freed_memory():
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so that a step's peak is
    not hidden by memory an earlier step freed but the process kept. A no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


class PeakMemory:
    """Context manager: peak memory above the starting level, in MiB (``.peak_mib``).

    On CUDA, the peak of ``torch.cuda.max_memory_allocated``; on the CPU, the process's peak
    resident memory sampled every millisecond from ``/proc/self/statm`` (Linux; 0 elsewhere),
    after handing freed heap memory back to the OS.
    """

    def __init__(self, device=None):
        self.device = None if device is None else torch.device(device)
        self.cuda = self.device is not None and self.device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            return self
        gc.collect()
        _release_freed_memory()
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mib(self):
        return max(self.peak - self.start, 0) / 2**20


def _timed(fn, device):
    """``(fn(), wall seconds)``, synchronising a CUDA device before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


def _denoise_batches(den, x, sigma, batch_size, device):
    """Denoise x (N, C, H, W) at one sigma in batches: (output, list of seconds per call)."""
    outs, seconds = [], []
    for i in range(0, len(x), batch_size):
        out, t = _timed(lambda: den.denoise(x[i:i + batch_size], sigma), device)
        outs.append(out)
        seconds.append(t)
    return torch.cat(outs), seconds


def _sample(den, noise, sigmas, sampler, device, bar):
    """Final samples and the x̂0 of every step: (N, C, H, W), (steps, N, C, H, W), seconds, calls.

    ``bar`` (a tqdm bar) advances by one per step."""
    denoised, counting = [], CountingDenoiser(den)

    def step(info):
        denoised.append(info["denoised"])
        bar.update()

    x, seconds = _timed(lambda: sample(counting, noise, sigmas, sampler, callback=step), device)
    return x, torch.stack(denoised), seconds, counting.calls


# ----------------------------------------------------------------------------- the protocol

def _resolve_params(params, X, sigma_grid):
    """Per-method params with ``"snr"`` patch sizes replaced by the data's SNR schedule."""
    resolved = {}
    for key, value in params.items():
        if value == "snr":
            value = scales.snr_resolution_schedule(X, sigma_grid)
        resolved[key] = value
    return resolved


def run(protocol=None, *, progress=True, log=print):
    """Run the benchmark protocol; returns the results as a JSON-ready dict.

    Parameters
    ----------
    protocol : dict, optional
        From :func:`make_protocol` (default: ``make_protocol()``).
    progress : bool, show progress bars
    log : callable, receives one line of text per stage (``print`` by default)

    Returns
    -------
    dict with ``protocol``, ``environment``, ``reference``, ``gate``, ``denoising`` (the
    reference's own MSE per sigma, and per method: fit time and memory and one entry per sigma),
    ``sampling`` (per method: final-sample metrics, x̂0 R² per step, time), and the tensors
    needed for figures under the private key ``_images``.
    """
    p = make_protocol() if protocol is None else protocol
    device = torch.device(p["device"] or "cpu")  # library code never picks a GPU by itself
    ref_path = reference_path(p)
    ref = io.load(ref_path)
    X = datasets.load(p["dataset"], "train", p["root"], progress=progress)
    if p["train_limit"]:
        X = X[:p["train_limit"]]
    X_test = datasets.load(p["dataset"], "test", p["root"], progress=progress)
    if tuple(X.shape[1:]) != tuple(ref.image_shape_):
        raise ValueError(f"the reference {ref_path} was fitted on images of shape {ref.image_shape_}, "
                         f"but {p['dataset']} has {tuple(X.shape[1:])}")
    same_data = getattr(ref, "fingerprint_", None) == data_fingerprint(X)
    log(f"reference {type(ref).__name__} from {shown_path(ref_path)}: "
        + ("trained on exactly these training images" if same_data else
           "WARNING: trained on different images than the methods are fitted on"))
    X, X_test = X.to(device), X_test.to(device)
    shape = tuple(X.shape[1:])

    den_p, smp_p, gate_p = p["denoising"], p["sampling"], p["gate"]
    sampling_sigmas = schedules.karras(smp_p["steps"], smp_p["sigma_min"], smp_p["sigma_max"], smp_p["rho"])
    levels = sorted({float(s) for s in [*den_p["sigmas"], *sampling_sigmas[:-1].tolist(), *gate_p["sigmas"]]})

    fitted, fits = _fit_methods(p, X, levels, device, progress, log)
    # the gate's Gaussian has default hyper-parameters (a protocol's rank=5 must not weaken it)
    gaussian = fitted["gaussian"] if "gaussian" in fitted and not p["params"].get("gaussian") else \
        registry.make("gaussian").fit(X)
    gate = _quality_gate(ref, gaussian, X_test, gate_p, shape, den_p["batch_size"], device)
    log(gate_text(gate))
    denoising = _denoiser_agreement(ref, fitted, fits, X_test[:den_p["n_images"]], den_p, device, progress)
    sampling, finals = _sampler_agreement(ref, fitted, smp_p, sampling_sigmas, shape, device, progress)

    return {
        "protocol": p,
        "environment": environment(device),
        "reference": {"path": shown_path(ref_path), "class": type(ref).__name__, "params": _jsonable(ref.get_params()),
                      "n_steps": getattr(ref, "n_steps_", None), "trained_on_same_images": same_data},
        "n_train": len(X),
        "gate": gate,
        "denoising": denoising,
        "sampling": sampling,
        "_images": {"samples": {k: v[0].cpu() for k, v in finals.items()}},
    }


def _fit_methods(p, X, levels, device, progress, log):
    """Fit every method of the protocol on X: (estimators, fit records) by method name."""
    fitted, fits = {}, {}
    for name in tqdm(p["methods"], desc="fitting", disable=not progress):
        params = _resolve_params(p["params"].get(name, {}), X.cpu(), levels)
        est = registry.make(name, dataset=p["dataset"], **params)
        with PeakMemory(device) as mem:
            _, seconds = _timed(lambda: est.fit(X), device)
        fitted[name] = est
        fits[name] = {"params": _jsonable(est.get_params()), "fit_seconds": seconds, "fit_peak_mib": mem.peak_mib}
        log(f"fitted {name} in {seconds:.1f} s")
    return fitted, fits


def _denoiser_agreement(ref, fitted, fits, x0, den_p, device, progress):
    """Every method's and the reference's D(x0 + sigma eps, sigma) on the sigma grid."""
    sigmas = [float(s) for s in den_p["sigmas"]]
    eps = seeded_noise(range(den_p["seed"], den_p["seed"] + len(x0)), x0.shape[1:], device=device)
    bs = den_p["batch_size"]
    ref_out, ref_own, ref_seconds = [], [], []
    ref.denoise(x0[:1], sigmas[0])  # warm-up: one-time set-up is not timed
    for sigma in tqdm(sigmas, desc="reference denoising", disable=not progress):
        out, seconds = _denoise_batches(ref, x0 + sigma * eps, sigma, bs, device)
        ref_out.append(out)
        ref_own.append(float(metrics.mse(out, x0).mean()))
        ref_seconds.append(statistics.median(seconds))
    denoising = {"n_images": len(x0), "sigmas": sigmas, "reference_own_mse": ref_own,
                 "reference_seconds_per_call": ref_seconds, "methods": {}}
    for name, est in fitted.items():
        rows = []
        est.denoise(x0[:1], sigmas[0])  # warm-up
        with PeakMemory(device) as mem:
            for s, sigma in enumerate(tqdm(sigmas, desc=f"{name} denoising", disable=not progress)):
                out, seconds = _denoise_batches(est, x0 + sigma * eps, sigma, bs, device)
                rows.append({"sigma": sigma, **metrics.summarise(out, ref_out[s]),
                             "own_mse": float(metrics.mse(out, x0).mean()),
                             "seconds_per_call": statistics.median(seconds)})
        denoising["methods"][name] = {**fits[name], "batch_size": min(bs, len(x0)),
                                      "denoise_peak_mib": mem.peak_mib, "by_sigma": rows}
    return denoising


def _sampler_agreement(ref, fitted, smp_p, sigmas, shape, device, progress):
    """Samples of the reference and every method from shared seeded noise, and their agreement.

    Returns the results section and ``{name: (final samples, x̂0 of every step)}``."""
    noise = seeded_noise(range(smp_p["seed"], smp_p["seed"] + smp_p["n_samples"]), shape, device=device)
    sampling, finals = {"sigmas": sigmas.tolist(), "methods": {}}, {}
    for name, den in [("reference", ref), *fitted.items()]:
        with PeakMemory(device) as mem, tqdm(total=smp_p["steps"], desc=f"{name} sampling", unit="step",
                                             disable=not progress) as bar:
            final, x0_hat, seconds, calls = _sample(den, noise, sigmas, smp_p["sampler"], device, bar)
        finals[name] = (final, x0_hat)
        sampling["methods"][name] = {"seconds": seconds, "denoiser_calls": calls, "peak_mib": mem.peak_mib}
    ref_final, ref_x0 = finals["reference"]
    for name in fitted:
        final, x0_hat = finals[name]
        entry = sampling["methods"][name]
        entry.update(metrics.summarise(final, ref_final))
        entry["x0_r2_by_step"] = [float(metrics.r2(a, b).nanmean()) for a, b in zip(x0_hat, ref_x0)]
        entry["x0_mse_by_step"] = [float(metrics.mse(a, b).mean()) for a, b in zip(x0_hat, ref_x0)]
    return sampling, finals


def _quality_gate(ref, gaussian, X_test, gate_p, shape, batch_size, device):
    """The reference's and the Gaussian denoiser's own denoising MSE on held-out images."""
    x0 = X_test[:gate_p["n_images"]]
    eps = seeded_noise(range(gate_p["seed"], gate_p["seed"] + len(x0)), shape, device=device)
    rows = []
    for sigma in gate_p["sigmas"]:
        x = x0 + sigma * eps
        ref_mse = float(metrics.mse(_denoise_batches(ref, x, sigma, batch_size, device)[0], x0).mean())
        gauss_mse = float(metrics.mse(_denoise_batches(gaussian, x, sigma, batch_size, device)[0], x0).mean())
        rows.append({"sigma": float(sigma), "reference_mse": ref_mse, "gaussian_mse": gauss_mse,
                     "passed": ref_mse < gauss_mse})
    return {"n_images": len(x0), "passed": all(r["passed"] for r in rows), "by_sigma": rows}


def gate_text(gate):
    """The quality gate as printable lines."""
    lines = [f"quality gate (reference vs Gaussian own denoising MSE on {gate['n_images']} held-out images): "
             + ("PASSED" if gate["passed"] else "FAILED: the reference is under-trained, its agreement numbers mean little")]
    for r in gate["by_sigma"]:
        lines.append(f"  sigma {r['sigma']:>6g}: reference {r['reference_mse']:.5f}  gaussian "
                     f"{r['gaussian_mse']:.5f}  {'ok' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def environment(device):
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device.type == "cuda":
        cpu += f"; GPU {torch.cuda.get_device_name(device)}"
    return {"machine": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "analytic_denoisers": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def shown_path(path):
    """A path relative to the working directory when it lies below it (reports stay portable)."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _jsonable(params):
    return json.loads(json.dumps(params, default=scales.json_default))


# ----------------------------------------------------------------------------- writers

SAMPLES_IN_FIGURE = 16  # columns of samples.png


def write(results, out_dir, command=None):
    """Write results.json, denoising.csv, sampling.csv, results.md and two PNG figures.

    Returns the list of written paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in results.items() if not k.startswith("_")}
    if command:
        public = {"command": command, **public}
    paths = [out / "results.json", out / "denoising.csv", out / "sampling.csv", out / "results.md",
             out / "samples.png", out / "metrics.png"]
    io.write_json(paths[0], public)
    den, smp = results["denoising"], results["sampling"]
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "sigma", *metrics.METRICS, "own_mse", "seconds_per_call"])
        for s, sigma in enumerate(den["sigmas"]):
            w.writerow(["reference", sigma, *[""] * len(metrics.METRICS), den["reference_own_mse"][s],
                        den["reference_seconds_per_call"][s]])
        for name, entry in den["methods"].items():
            for row in entry["by_sigma"]:
                w.writerow([name, row["sigma"], *[row[m] for m in metrics.METRICS], row["own_mse"],
                            row["seconds_per_call"]])
    with open(paths[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", *metrics.METRICS, "seconds", "denoiser_calls", "peak_mib"])
        for name, entry in smp["methods"].items():
            w.writerow([name, *[entry.get(m, "") for m in metrics.METRICS], entry["seconds"],
                        entry["denoiser_calls"], entry["peak_mib"]])
    paths[3].write_text(markdown(results, command))
    samples = results["_images"]["samples"]
    keep = min(SAMPLES_IN_FIGURE, len(samples["reference"]))
    label = {"reference": f"reference ({results['reference']['class']})"}
    save_labelled_rows([(label.get(k, k), v[:keep]) for k, v in samples.items()], paths[4],
                       title=f"final samples, same seeds in every row ({results['protocol']['sampling']['sampler']}, "
                             f"{results['protocol']['sampling']['steps']} steps)")
    plot_metrics(results, paths[5])
    return paths


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def markdown(results, command=None):
    """The results as a markdown report (what results.md holds)."""
    p, env, den, smp, gate = (results[k] for k in ("protocol", "environment", "denoising", "sampling", "gate"))
    ref = results["reference"]
    lines = ["# Benchmark: analytical denoisers against a trained reference", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Run {env['date']} on {env['machine']} ({env['cpu_count']} cores, torch {env['torch']}, "
        f"{env['torch_threads']} threads, device {env['device']}), analytic_denoisers {env['analytic_denoisers']}.",
        "",
        f"Data: `{p['dataset']}`, {results['n_train']} training images (every method is fitted on them), "
        f"held-out test images for denoising. Reference: {ref['class']} `{ref['path']}`"
        + (f", {ref['n_steps']} training steps" if ref["n_steps"] else "")
        + (", trained on exactly these training images." if ref["trained_on_same_images"]
           else ", **trained on different images than the methods were fitted on**."),
        "",
        "## Quality gate", "",
        f"The reference's own denoising MSE must be below the Gaussian denoiser's at every sigma "
        f"({gate['n_images']} held-out images): **{'passed' if gate['passed'] else 'FAILED'}**.", "",
    ]
    lines += _table(["sigma", "reference MSE", "Gaussian MSE", ""],
                    [[f"{r['sigma']:g}", _fmt(r["reference_mse"], 4), _fmt(r["gaussian_mse"], 4),
                      "ok" if r["passed"] else "FAIL"] for r in gate["by_sigma"]])
    sig = den["sigmas"]
    lines += ["## Denoiser agreement", "",
              f"{den['n_images']} held-out test images, `x = x0 + sigma * eps` with per-image seeded `eps` "
              f"(seeds {p['denoising']['seed']}…), the same for every method. Agreement of "
              "`D_method(x, sigma)` with `D_ref(x, sigma)`: per-image R² (mean over images), Pearson r "
              "(median), MSE (mean), explained variance `1 - ||a-b||²/||b||²` (mean). Own MSE is "
              "against the clean image.", ""]
    header = ["method"] + [f"σ={s:g}" for s in sig]
    for metric, title in (("r2", "R² (mean)"), ("pearson", "Pearson r (median)"), ("mse", "MSE to the reference"),
                          ("explained_variance", "explained variance"), ("own_mse", "own denoising MSE (to x0)")):
        rows = [[name] + [_fmt(r[metric]) for r in e["by_sigma"]] for name, e in den["methods"].items()]
        if metric == "own_mse":
            rows.insert(0, ["reference"] + [_fmt(v) for v in den["reference_own_mse"]])
        lines += [f"**{title}**", ""] + _table(header, rows)
    lines += ["**Cost** (CPU peak memory is the process's resident memory above its level before the "
              "step; memory freed by earlier steps may be reused, so it depends on the order of methods)", ""]
    batch = min(p["denoising"]["batch_size"], den["n_images"])
    lines += _table(["method", "fit (s)", "fit peak (MiB)", "denoise call (s, median over σ)", "images per call",
                     "denoise peak (MiB)"],
                    [["reference", "", "", _fmt(statistics.median(den["reference_seconds_per_call"]), 3), batch, ""]]
                    + [[name, _fmt(e["fit_seconds"], 2), _fmt(e["fit_peak_mib"], 1),
                        _fmt(statistics.median(r["seconds_per_call"] for r in e["by_sigma"]), 3),
                        e["batch_size"], _fmt(e["denoise_peak_mib"], 1)] for name, e in den["methods"].items()])
    sp = p["sampling"]
    lines += ["## Sampler agreement", "",
              f"{sp['n_samples']} samples from shared seeded noise (seeds {sp['seed']}…), {sp['sampler']} with "
              f"{sp['steps']} steps on karras({sp['steps']}, {sp['sigma_min']}, {sp['sigma_max']}, rho={sp['rho']}), "
              "the same for every method. Final samples against the reference's; x̂0 R² is the mean over "
              "the steps of the per-step x̂0 agreement.", ""]
    lines += _table(["method", "R²", "Pearson r", "MSE", "explained var.", "x̂0 R² (mean over steps)",
                     f"seconds (all {sp['n_samples']} samples)", "denoiser calls", "peak (MiB)"],
                    [[name, _fmt(e.get("r2")), _fmt(e.get("pearson")), _fmt(e.get("mse")),
                      _fmt(e.get("explained_variance")),
                      _fmt(float(np.nanmean(e["x0_r2_by_step"]))) if "x0_r2_by_step" in e else "",
                      _fmt(e["seconds"], 2), e["denoiser_calls"], _fmt(e["peak_mib"], 1)]
                     for name, e in smp["methods"].items()])
    lines += ["![final samples](samples.png)", "", "![metrics against sigma](metrics.png)", ""]
    return "\n".join(lines)


def plot_metrics(results, path):
    """Metric-against-sigma curves: R², r, MSE to the reference, own MSE, and x̂0 R² while sampling."""
    plt = pyplot()

    den, smp = results["denoising"], results["sampling"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [("r2", "R² to the reference (mean)"), ("pearson", "Pearson r (median)"),
              ("mse", "MSE to the reference"), ("explained_variance", "explained variance"),
              ("own_mse", "own denoising MSE (to x0)")]
    for ax, (metric, title) in zip(axes.flat, panels):
        for name, entry in den["methods"].items():
            ax.plot(den["sigmas"], [r[metric] for r in entry["by_sigma"]], marker="o", ms=3, label=name)
        if metric == "own_mse":
            ax.plot(den["sigmas"], den["reference_own_mse"], "k--", marker="o", ms=3, label="reference")
        ax.set(xscale="log", xlabel="sigma", title=title)
        if metric in ("mse", "own_mse"):
            ax.set_yscale("log")
        if metric in ("r2", "explained_variance", "pearson"):
            ax.set_ylim(-0.05, 1.02)
        ax.grid(alpha=0.3)
    ax = axes.flat[5]
    levels = smp["sigmas"][:-1]
    for name, entry in smp["methods"].items():
        if "x0_r2_by_step" in entry:
            ax.plot(levels, entry["x0_r2_by_step"], marker="o", ms=3, label=name)
    ax.set(xscale="log", xlabel="sigma of the step", title="sampling: x̂0 R² to the reference", ylim=(-0.05, 1.02))
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    p = results["protocol"]
    fig.suptitle(f"{p['dataset']}: every method against the reference ({results['reference']['class']})")
    return save_figure(fig, path)
