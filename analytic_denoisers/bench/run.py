"""Running the protocol: fit every method, the quality gate, denoiser and sampler agreement."""

import statistics

import torch
from tqdm.auto import tqdm

from .. import datasets, metrics, registry
from ..core.batching import in_batches
from ..core.distributed import SplitQueries
from ..core.files import to_jsonable
from ..core.fingerprint import data_fingerprint
from ..core.noise import seeded_noise
from ..sampling.samplers import CountingDenoiser, sample, sample_ddim_vp
from ..scales.calibration import calibrate
from ..scales.rules import snr_resolution_schedule
from .measure import PeakMemory, environment, timed
from .protocol import CALIBRATED, make_protocol, reference_path, sampling_grid
from .reference import open_reference


def _denoise_batches(den, x, sigma, batch_size, device):
    """Denoise x (N, C, H, W) at one sigma in batches: (output, list of seconds per call)."""
    seconds = []

    def call(images, level):
        out, t = timed(lambda: den.denoise(images, level), device)
        seconds.append(t)
        return out

    return in_batches(call, x, sigma, batch_size), seconds


class _StepInputs(CountingDenoiser):
    """A denoiser that counts its calls (``.calls``) and, with ``keep``, keeps the input
    ``(x, sigma)`` of the first call of each step (``.inputs``): the state a step starts from,
    in VE coordinates."""

    def __init__(self, denoiser, keep):
        super().__init__(denoiser)
        self.inputs, self._new_step, self.keep = [], True, keep

    def __call__(self, x, sigma):
        if self._new_step and self.keep:
            self.inputs.append((x, sigma))
            self._new_step = False
        return super().__call__(x, sigma)

    def next_step(self):
        self._new_step = True


def _sample(den, noise, grid, smp_p, device, bar):
    """Samples of the protocol's grid: (samples, x̂0 of every step, step inputs, seconds, calls).

    A ``"vp"`` grid with DDIM starts from the VP state ``x_T = noise`` and steps as diffusers'
    ``DDIMScheduler`` (clipping included); every other case starts from ``sigmas[0] * noise``.
    ``bar`` (a tqdm bar) advances by one per step."""
    denoised, counting = [], _StepInputs(den, keep=smp_p["single"])

    def step(info):
        denoised.append(info["denoised"])
        counting.next_step()
        bar.update()

    if "alpha_bars" in grid and smp_p["sampler"] == "ddim":
        def generate():
            return sample_ddim_vp(counting, noise, grid["alpha_bars"], alpha_bars_next=grid["alpha_bars_next"],
                                  clip_denoised=smp_p["clip_sample"], callback=step)
    else:
        def generate():
            return sample(counting, noise, grid["sigmas"], smp_p["sampler"], callback=step)
    x, seconds = timed(generate, device)
    if smp_p["final"] == "denoised":
        x = denoised[-1]
    return x, torch.stack(denoised), counting.inputs, seconds, counting.calls


def reference_for(protocol, X, reference=None):
    """The protocol's reference (or ``reference``, any denoiser or spec of
    :func:`~.reference.open_reference`), checked against the training images ``X``.

    Returns ``(denoiser, name, trained_on_same_images)``; the last is None for a network adapter
    that was not fitted yet: it is fitted here on ``X`` to learn the image shape, and what the
    network was trained on is not known.
    """
    spec = reference_path(protocol) if reference is None else reference
    ref, name = open_reference(spec, protocol["reference_params"])
    if not hasattr(ref, "image_shape_") and hasattr(ref, "fit"):
        return ref.fit(X), name, None
    if tuple(X.shape[1:]) != tuple(getattr(ref, "image_shape_", X.shape[1:])):
        raise ValueError(f"the reference {name} was fitted on images of shape {ref.image_shape_}, "
                         f"but {protocol['dataset']} has {tuple(X.shape[1:])}")
    return ref, name, getattr(ref, "fingerprint_", None) == data_fingerprint(X)


def describe_reference(ref, name, same_data):
    """The reference as the results record it: where from, class, parameters, training."""
    unsaved = getattr(ref, "_not_saved", ())
    params = {k: v for k, v in ref.get_params().items() if k not in unsaved} if hasattr(ref, "get_params") else {}
    adapter = {"parameterization": ref.parameterization} if hasattr(ref, "parameterization") else {}
    return {"path": name, "class": type(ref).__name__, "params": to_jsonable(params), **adapter,
            "n_steps": getattr(ref, "n_steps_", None), "trained_on_same_images": same_data}


def _resolve_params(params, X, sigma_grid):
    """Per-method params with ``"snr"`` patch sizes replaced by the data's SNR schedule."""
    resolved = {}
    for key, value in params.items():
        if value == "snr":
            value = snr_resolution_schedule(X, sigma_grid)
        resolved[key] = value
    return resolved


def across_ranks(den, collectives):
    """How a fitted denoiser runs on several ranks: a softmax denoiser keeps only its shard of the
    training set (its calls merged across ranks: the same queries on every rank); any other
    (the reference network, the Gaussian, approximate modes) splits each batch's rows across the
    ranks (:class:`~analytic_denoisers.core.distributed.SplitQueries`). Either way every rank
    gets the whole result."""
    if collectives is None:
        return den
    try:
        den._check_shardable()
    except (AttributeError, ValueError):
        return SplitQueries(den, collectives)
    return den.shard((collectives.rank, collectives.world), collectives.group)


def run(protocol=None, *, reference=None, progress=True, log=print, collectives=None):
    """Run the benchmark protocol; returns the results as a JSON-ready dict.

    Parameters
    ----------
    protocol : dict, optional
        From :func:`make_protocol` (default: ``make_protocol()``).
    progress : bool, show progress bars
    log : callable, receives one line of text per stage (``print`` by default)
    collectives : :class:`~analytic_denoisers.core.distributed.Collectives`, optional
        Run on every rank of a ``torch.distributed`` group (``torchrun ... bench``): every rank
        reads the data and fits every method on the whole training set (the same fit as one
        process), then each method runs as :func:`across_ranks` says. Every rank computes the
        same results (rank 0 writes them); the environment records ``world_size``.

    Returns
    -------
    dict with ``protocol``, ``environment``, ``reference``, ``gate``, ``denoising`` (the
    reference's own MSE per sigma, and per method: fit time and memory and one entry per sigma),
    ``sampling`` (per method: final-sample metrics, x̂0 R² per step, time), and the tensors
    needed for figures under the private key ``_images``.
    """
    p = make_protocol() if protocol is None else protocol
    device = torch.device(p["device"] or "cpu")  # library code never picks a GPU by itself
    X = datasets.load(p["dataset"], "train", p["root"], progress=progress)
    if p["train_limit"]:
        X = X[:p["train_limit"]]
    X_test = datasets.load(p["dataset"], "test", p["root"], progress=progress)
    ref, ref_name, same_data = reference_for(p, X, reference)
    log(f"reference {type(ref).__name__} from {ref_name}: " + {
        True: "trained on exactly these training images",
        False: "WARNING: trained on different images than the methods are fitted on",
        None: "its training images are not known (a network adapter fitted here on the protocol's images)"}[same_data])
    X, X_test = X.to(device), X_test.to(device)
    shape = tuple(X.shape[1:])

    den_p, smp_p, gate_p = p["denoising"], p["sampling"], p["gate"]
    grid = sampling_grid(smp_p)
    levels = sorted({float(s) for s in [*den_p["sigmas"], *grid["sigmas"][:-1].tolist(), *gate_p["sigmas"]]})
    trained = ref.sigma_range() if hasattr(ref, "sigma_range") else None
    outside = [] if trained is None else [s for s in levels if not trained[0] <= s <= trained[1]]
    if outside:
        log(f"WARNING: the reference's timesteps cover sigma {trained[0]:.4g} ... {trained[1]:.4g}; the protocol's "
            f"sigmas {', '.join(f'{s:.4g}' for s in outside)} lie outside and get its nearest end timestep")

    calibration = {"images": X_test[den_p["n_images"]:den_p["n_images"] + p["calibration"]["n_images"]],
                   "sigmas": grid["sigmas"][:-1], "reference": ref, **p["calibration"]}
    fitted, fits = _fit_methods(p, X, levels, calibration, device, progress, log)
    # the gate's Gaussian has default hyper-parameters (a protocol's rank=5 must not weaken it)
    gaussian = fitted["gaussian"] if "gaussian" in fitted and not p["params"].get("gaussian") else \
        registry.make("gaussian").fit(X)
    described = describe_reference(ref, ref_name, same_data)
    if collectives is not None:
        ref, gaussian = SplitQueries(ref, collectives), across_ranks(gaussian, collectives)
        fitted = {name: across_ranks(est, collectives) for name, est in fitted.items()}
    gate = _quality_gate(ref, gaussian, X_test, gate_p, shape, den_p["batch_size"], device, progress)
    log(gate_text(gate))
    denoising = _denoiser_agreement(ref, fitted, fits, X_test[:den_p["n_images"]], den_p, device, progress)
    sampling, finals = _sampler_agreement(ref, fitted, smp_p, grid, shape, device, progress)

    return {
        "protocol": p,
        "environment": {**environment(device, 1 if collectives is None else collectives.world),
                        "sharded_methods": [name for name, est in fitted.items() if getattr(est, "shard_", None) is not None]},
        "reference": {**described,
                      **({} if trained is None else {"sigma_range": list(trained), "sigmas_outside": outside})},
        "n_train": len(X),
        "gate": gate,
        "denoising": denoising,
        "sampling": sampling,
        "_images": {"samples": {k: v[0].cpu() for k, v in finals.items()}},
    }


def _fit_methods(p, X, levels, calibration, device, progress, log):
    """Fit every method of the protocol on X, then calibrate its ``"calibrated"`` hyper-parameters
    (:func:`_calibrate`): (estimators, fit records) by method name."""
    fitted, fits = {}, {}
    for name in tqdm(p["methods"], desc="fitting", disable=not progress):
        params = _resolve_params(p["params"].get(name, {}), X.cpu(), levels)
        calibrated = [key for key, value in params.items() if value == CALIBRATED]
        est = registry.make(name, dataset=p["dataset"], **{k: v for k, v in params.items() if k not in calibrated})
        with PeakMemory(device) as mem:
            _, seconds = timed(lambda: est.fit(X), device)
        fitted[name] = est
        fits[name] = {"fit_seconds": seconds, "fit_peak_mib": mem.peak_mib}
        log(f"fitted {name} in {seconds:.1f} s")
        if calibrated:
            fits[name]["calibration"] = _calibrate(est, name, calibrated, X, calibration, device, progress, log)
        fits[name]["params"] = to_jsonable(est.get_params())
    return fitted, fits


def _calibrate(est, name, keys, X, calibration, device, progress, log):
    """Set each hyper-parameter of ``keys`` to the schedule that :func:`~analytic_denoisers.scales.calibrate`
    picks against the reference at the sampling grid's sigmas; returns its record per key (with
    the SNR rule's patch sizes at the same sigmas beside a calibrated ``patch_size``)."""
    images, sigmas = calibration["images"], calibration["sigmas"]
    if len(images) == 0:
        raise ValueError(f"calibrating {name} needs held-out test images after those of the denoising "
                         "agreement; the test split has none left (lower denoising.n_images)")
    records = {}
    for key in keys:
        result, seconds = timed(lambda: calibrate(
            est, key, calibration["candidates"][key], calibration["reference"], images, sigmas,
            metric=calibration["metric"], seed=calibration["seed"], progress=progress), device)
        est.set_params(**{key: result.schedule})
        records[key] = {**result.to_dict(), "n_images": len(images), "seconds": seconds}
        if key == "patch_size":
            snr = snr_resolution_schedule(X.cpu(), sigmas)
            records[key]["snr_rule"] = [snr(float(s)) for s in sigmas]
        log(f"calibrated {name}.{key} in {seconds:.1f} s: {records[key]['chosen']}")
    return records


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


def _compared(images, smp_p):
    """Images as the protocol compares them: as they are, or ``((x + 1) / 2).clamp(0, 1)``."""
    return ((images + 1) / 2).clamp(0, 1) if smp_p["clamp_unit"] else images


def _by_step(a, b, smp_p):
    """Every metric of ``metrics.summarise`` (the summaries and their quartiles) per step, for x̂0
    stacks ``a`` and ``b`` of shape (steps, N, C, H, W): {metric: [one value per step]}."""
    rows = [metrics.summarise(_compared(x, smp_p), _compared(y, smp_p)) for x, y in zip(a, b)]
    return {name: [row[name] for row in rows] for name in rows[0]}


def _sampler_agreement(ref, fitted, smp_p, grid, shape, device, progress):
    """Samples of the reference and every method from shared seeded noise, and their agreement.

    Per method: the final samples' metrics against the reference's, ``x0_by_step`` (each step's
    x̂0 against the reference's, along the two trajectories) and, with ``single``,
    ``x0_single_by_step`` (each step's x̂0 against the reference's x̂0 at the method's own state;
    Lukoianov et al.'s one-step variant). Returns the results section and
    ``{name: (final samples, x̂0 of every step)}``."""
    noise = seeded_noise(range(smp_p["seed"], smp_p["seed"] + smp_p["n_samples"]), shape, device=device)
    sampling = {"sigmas": grid["sigmas"].tolist(), "methods": {}}
    if "timesteps" in grid:
        sampling["timesteps"] = grid["timesteps"].tolist()
    finals, inputs = {}, {}
    for name, den in [("reference", ref), *fitted.items()]:
        with PeakMemory(device) as mem, tqdm(total=len(grid["sigmas"]) - 1, desc=f"{name} sampling", unit="step",
                                             disable=not progress) as bar:
            final, x0_hat, inputs[name], seconds, calls = _sample(den, noise, grid, smp_p, device, bar)
        finals[name] = (final, x0_hat)
        sampling["methods"][name] = {"seconds": seconds, "denoiser_calls": calls, "peak_mib": mem.peak_mib}
    ref_final, ref_x0 = finals["reference"]
    for name in fitted:
        final, x0_hat = finals[name]
        entry = sampling["methods"][name]
        entry.update(metrics.summarise(_compared(final, smp_p), _compared(ref_final, smp_p)))
        entry["x0_by_step"] = _by_step(x0_hat, ref_x0, smp_p)
        if smp_p["single"]:
            with torch.no_grad():
                ref_at_own = torch.stack([ref.denoise(x, sigma) for x, sigma in inputs[name]])
            entry["x0_single_by_step"] = _by_step(x0_hat, ref_at_own, smp_p)
    return sampling, finals


def _quality_gate(ref, gaussian, X_test, gate_p, shape, batch_size, device, progress=False):
    """The reference's and the Gaussian denoiser's own denoising MSE on held-out images."""
    x0 = X_test[:gate_p["n_images"]]
    eps = seeded_noise(range(gate_p["seed"], gate_p["seed"] + len(x0)), shape, device=device)
    rows = []
    for sigma in tqdm(gate_p["sigmas"], desc="quality gate", disable=not progress):
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
