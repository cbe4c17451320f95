"""The benchmark's files: results.json, denoising.csv, sampling.csv, results.md and two figures."""

import csv
import math
import statistics
from pathlib import Path

import numpy as np

from .. import metrics
from ..core.files import write_json
from ..viz import pyplot, save_figure, save_labelled_rows


SAMPLES_IN_FIGURE = 16  # columns of samples.png
# keys of results (and columns of the CSV files) whose values vary from run to run
NOT_REPRODUCIBLE = frozenset({"seconds", "seconds_per_call", "reference_seconds_per_call", "fit_seconds",
                              "fit_peak_mib", "denoise_peak_mib", "peak_mib", "environment", "command"})


def reproducible(results):
    """``results`` (a dict of results.json, an analysis JSON, or a CSV row) without the entries
    of :data:`NOT_REPRODUCIBLE` and the private ``_`` keys: what a re-run must give again."""
    if isinstance(results, dict):
        return {k: reproducible(v) for k, v in results.items() if k not in NOT_REPRODUCIBLE and not k.startswith("_")}
    if isinstance(results, list):
        return [reproducible(v) for v in results]
    return results


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
    write_json(paths[0], public)
    den, smp = results["denoising"], results["sampling"]
    columns = [*metrics.METRICS, *(f"{m}_{q}" for m in metrics.METRICS for q in ("q25", "q75"))]  # with the spread
    with open(paths[1], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "sigma", *columns, "own_mse", "seconds_per_call"])
        for s, sigma in enumerate(den["sigmas"]):
            w.writerow(["reference", sigma, *[""] * len(columns), den["reference_own_mse"][s],
                        den["reference_seconds_per_call"][s]])
        for name, entry in den["methods"].items():
            for row in entry["by_sigma"]:
                w.writerow([name, row["sigma"], *[row.get(m, "") for m in columns], row["own_mse"],
                            row["seconds_per_call"]])
    with open(paths[2], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", *columns, "seconds", "denoiser_calls", "peak_mib"])
        for name, entry in smp["methods"].items():
            w.writerow([name, *[entry.get(m, "") for m in columns], entry["seconds"],
                        entry["denoiser_calls"], entry["peak_mib"]])
    paths[3].write_text(markdown(results, command))
    samples = results["_images"]["samples"]
    keep = min(SAMPLES_IN_FIGURE, len(samples["reference"]))
    label = {"reference": f"reference ({results['reference']['class']})",
             **{k: f"{k}  R² {_fmt(e['r2'])}" for k, e in smp["methods"].items() if "r2" in e}}
    save_labelled_rows([(label.get(k, k), v[:keep]) for k, v in samples.items()], paths[4],
                       title=f"final samples, same seeds in every row ({results['protocol']['sampling']['sampler']}, "
                             f"{len(smp['sigmas']) - 1} steps); R²: mean over all {len(samples['reference'])} "
                             "samples against the reference's")
    plot_metrics(results, paths[5])
    return paths


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _spread(entry, metric, digits=3):
    """``value [q25, q75]``: a summary with its quartiles over images (the value alone in results
    written before the spread was recorded)."""
    value = _fmt(entry.get(metric), digits)
    if f"{metric}_q25" not in entry:
        return value
    return f"{value} [{_fmt(entry[f'{metric}_q25'], digits)}, {_fmt(entry[f'{metric}_q75'], digits)}]"


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
        f"{env['torch_threads']} threads, device {env['device']}"
        + (f", {env['world_size']} processes" if env.get("world_size", 1) > 1 else "")
        + f"), analytic_denoisers {env['analytic_denoisers']}.",
        "",
        f"Data: `{p['dataset']}`, {results['n_train']} training images (every method is fitted on them), "
        f"held-out test images for denoising. Reference: {ref['class']} `{ref['path']}`"
        + (f" (a {ref['parameterization']}-prediction network)" if ref.get("parameterization") else "")
        + (f", {ref['n_steps']} training steps" if ref["n_steps"] else "")
        + {True: ", trained on exactly these training images.",
           False: ", **trained on different images than the methods were fitted on**.",
           None: "; the images it was trained on are not known."}[ref["trained_on_same_images"]],
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
              "(median), MSE (mean), explained variance `1 - ||a-b||²/||b||²` (mean), each with its "
              "quartiles over the images in brackets. Own MSE is against the clean image (mean).", ""]
    header = ["method"] + [f"σ={s:g}" for s in sig]
    for metric, title in (("r2", "R² (mean)"), ("pearson", "Pearson r (median)"), ("mse", "MSE to the reference"),
                          ("explained_variance", "explained variance"), ("own_mse", "own denoising MSE (to x0)")):
        rows = [[name] + [_spread(r, metric) for r in e["by_sigma"]] for name, e in den["methods"].items()]
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
    lines += _calibration_lines(p, den)
    sp = p["sampling"]
    lines += ["## Sampler agreement", "",
              f"{sp['n_samples']} samples from shared seeded noise (seeds {sp['seed']}…), {grid_text(sp, smp)}, "
              "the same for every method. "
              + ("The sample is the last step's x̂0. " if sp["final"] == "denoised" else "")
              + ("Images are compared as `((x + 1) / 2).clamp(0, 1)`. " if sp["clamp_unit"] else "")
              + "Final samples against the reference's, each metric summarised as in the denoiser tables "
              "with its quartiles over the samples (R² unbiased: `1 - MSE / var` with the unbiased "
              "pixel variance of the reference image, as Lukoianov et al. compute it); x̂0 R² is the "
              "mean over the steps of each step's x̂0 against the reference's"
              + (", along the two trajectories (\"trajectory\") and at the method's own states "
                 "(\"single\": the reference denoises the method's state)." if sp["single"] else "."), ""]
    lines += _table(["method", "R²", "R² unbiased", "Pearson r", "MSE", "explained var.", "x̂0 R² (trajectory)"]
                    + (["x̂0 R² (single)"] if sp["single"] else [])
                    + [f"seconds (all {sp['n_samples']} samples)", "denoiser calls", "peak (MiB)"],
                    [[name, *(_spread(e, m) for m in metrics.METRICS), _mean_over_steps(e, "x0_by_step")]
                     + ([_mean_over_steps(e, "x0_single_by_step")] if sp["single"] else [])
                     + [_fmt(e["seconds"], 2), e["denoiser_calls"], _fmt(e["peak_mib"], 1)]
                     for name, e in smp["methods"].items()])
    lines += ["![final samples](samples.png)", "", "![metrics against sigma](metrics.png)", ""]
    return "\n".join(lines)


def _calibration_lines(p, den):
    """The calibrated hyper-parameters per sigma (and the SNR rule's patch size beside them)."""
    records = {(name, key): record for name, e in den["methods"].items()
               for key, record in e.get("calibration", {}).items()}
    if not records:
        return []
    cal = p["calibration"]
    first = next(iter(records.values()))
    snr = next((r["snr_rule"] for r in records.values() if "snr_rule" in r), None)
    lines = ["## Calibrated hyper-parameters", "",
             f"At each sigma of the sampling grid, the candidate whose outputs best match the reference's "
             f"({cal['metric']}, mean over {first['n_images']} held-out test images that follow the denoising "
             f"ones, noise seeds {cal['seed']}…), as `scales.calibrate` picks it; a call at any other sigma "
             "uses the nearest level's value (in log sigma). Candidates: "
             + "; ".join(f"{key} {cands}" for key, cands in cal["candidates"].items())
             + (". Beside them, the patch size of the data's SNR rule (`\"snr\"`)." if snr else "."), ""]
    header = ["σ"] + [f"{name} {key}" for name, key in records] + (["SNR rule"] if snr else [])
    rows = [[f"{sigma:.4g}"] + [r["chosen"][i] for r in records.values()] + ([snr[i]] if snr else [])
            for i, sigma in enumerate(first["sigmas"])]
    rows.append(["seconds"] + [_fmt(r["seconds"], 1) for r in records.values()] + ([""] if snr else []))
    return lines + _table(header, rows)


def _mean_over_steps(entry, key):
    return _fmt(float(np.nanmean(entry[key]["r2"]))) if key in entry else ""


def grid_text(sp, smp):
    """The sampling grid of a protocol's ``sampling`` section, in words."""
    steps = len(smp["sigmas"]) - 1
    if sp["schedule"] == "karras":
        grid = f"karras({sp['steps']}, {sp['sigma_min']}, {sp['sigma_max']}, rho={sp['rho']})"
    elif sp["schedule"] == "sigmas":
        grid = f"the sigmas {', '.join(f'{s:.4g}' for s in smp['sigmas'])}"
    else:
        vp = sp["vp"]
        grid = (f"the timesteps {', '.join(map(str, smp['timesteps']))} ({vp['timestep_spacing']} spacing) of a "
                f"{vp['num_train_timesteps']}-step {vp['beta_schedule']} VP schedule (betas {vp['beta_start']:g} … "
                f"{vp['beta_end']:g}), set_alpha_to_one={vp['set_alpha_to_one']}"
                + (f", clip_sample={sp['clip_sample']:g}" if sp["clip_sample"] else ""))
    return f"{sp['sampler']} with {steps} steps on {grid}"


ZOOM_DROP = 0.1  # share of the lowest points an agreement panel may leave below its lower edge


def zoom_limits(values, top=1.0):
    """Y-limits of an agreement panel (R², r, explained variance) zoomed to where the methods
    differ: from the :data:`ZOOM_DROP` quantile of the plotted values (the worst few points may
    fall below, so that one poor method does not squash the rest near 1) to their maximum (at
    most ``top``), padded by 5%. Returns ``(bottom, top, points below bottom)``."""
    v = np.sort(np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float))
    if not len(v):
        return -0.05, top + 0.02, 0
    hi = min(float(v[-1]), top)
    lo = float(v[int(ZOOM_DROP * len(v))])  # the lowest points are left out only where they would
    if lo - v[0] <= hi - lo:                # more than double the panel's height
        lo = float(v[0])
    lo = min(lo, hi)
    pad = max(0.05 * (hi - lo), 0.005)
    return lo - pad, hi + pad, int((v < lo - pad).sum())


def _curve(ax, x, entries, metric, label, color, ls):
    """One method's line (its summary) and, where recorded, a band between its quartiles over images."""
    def values(key):  # None (NaN in results.json) as NaN
        return np.array([e[key] for e in entries], dtype=float)

    ax.plot(x, values(metric), marker="o", ms=3, color=color, ls=ls, label=label)
    if all(f"{metric}_q25" in e for e in entries):
        ax.fill_between(x, values(f"{metric}_q25"), values(f"{metric}_q75"), color=color, alpha=0.12, lw=0)
    return values(metric).tolist()


def plot_metrics(results, path):
    """Metric-against-sigma panels: R², r, MSE to the reference, explained variance, own MSE, and x̂0
    R² while sampling; each line with its quartile band over the images, the agreement panels
    zoomed (:func:`zoom_limits`), one legend naming every line."""
    plt = pyplot()

    den, smp = results["denoising"], results["sampling"]
    # a colour and a line style per method: the ten colours of the cycle, then dashed, then dotted
    styles = {name: dict(color=f"C{i % 10}", ls=("-", "--", ":")[i // 10 % 3]) for i, name in enumerate(den["methods"])}
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5), layout="constrained")
    panels = [("r2", "R² to the reference (mean)"), ("pearson", "Pearson r (median)"),
              ("mse", "MSE to the reference (mean)"), ("explained_variance", "explained variance (mean)"),
              ("own_mse", "own denoising MSE (to x0, mean)")]
    for ax, (metric, title) in zip(axes.flat, panels):
        values = []
        for name, entry in den["methods"].items():
            values += _curve(ax, den["sigmas"], entry["by_sigma"], metric, name, **styles[name])
        if metric == "own_mse":
            ax.plot(den["sigmas"], den["reference_own_mse"], "k--", marker="o", ms=3, label="reference")
        ax.set(xscale="log", xlabel="sigma", title=title)
        if metric in ("mse", "own_mse") and any(v > 0 for line in ax.get_lines() for v in line.get_ydata()):
            ax.set_yscale("log")  # not where every method equals the reference (MSE 0)
        if metric in ("r2", "explained_variance", "pearson"):
            _zoom(ax, values, title)
        ax.grid(alpha=0.3)
    ax, values = axes.flat[5], []
    levels = smp["sigmas"][:-1]
    for name, entry in smp["methods"].items():
        steps = [dict(zip(entry["x0_by_step"], row)) for row in zip(*entry["x0_by_step"].values())] \
            if "x0_by_step" in entry else []
        if steps:
            values += _curve(ax, levels, steps, "r2", name, **styles[name])
        if "x0_single_by_step" in entry:
            ax.plot(levels, entry["x0_single_by_step"]["r2"], ls=":", marker="x", ms=3, color=styles[name]["color"])
    ax.set(xscale="log", xlabel="sigma of the step")
    _zoom(ax, values, "sampling: x̂0 R² to the reference (mean)"
          + (" (dotted: single)" if results["protocol"]["sampling"]["single"] else ""))
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    handles = {label: h for a in axes.flat for h, label in zip(*a.get_legend_handles_labels())}
    fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=9,
               title="bands: quartiles\nover images")
    p = results["protocol"]
    fig.suptitle(f"{p['dataset']}: every method against the reference ({results['reference']['class']}); "
                 f"agreement panels zoomed to where the methods differ")
    return save_figure(fig, path)


def _zoom(ax, values, title):
    bottom, top, below = zoom_limits(values)
    ax.set_ylim(bottom, top)
    ax.set_title(title + (f"\n({below} point{'s' * (below > 1)} below the panel)" if below else ""))
