"""Ablation of the anchored patch composite: which part of it makes its samples agree with a UNet.

Every configuration is an ``AnchoredCompositeDenoiser`` fitted on the same training images
(weight 0 is the patch composite alone, weight 1 the mixture alone); all sample from the same
seeded noise with the bench's default sampler (Heun, 10 Karras steps from sigma = 80), and their
final samples are compared with the reference's: per-image R² (mean and quartiles) and median
Pearson r, as ``metrics.summarise`` computes them.

Two controls are not denoisers: the final samples of PSPC alone and of the mixture alone,
averaged pixel by pixel after sampling. R² to the reference rewards such a hedge, so the
anchored composite's lead means something only where it beats them. The "grey share" column
(pixels with |x| < 0.8, the reference's share first) shows how soft each set of samples is.

    python benchmarks/ablation_anchored.py -o benchmarks/results/anchored-composite/ablation-fashion-mnist.md
    python benchmarks/ablation_anchored.py --dataset mnist --root DIR --limit 10000 \\
        --reference out/unet-mnist10k.h5 -o benchmarks/results/anchored-composite/ablation-mnist.md
"""

import argparse
import json
import os
import time
from pathlib import Path

import torch

import analytic_denoisers as ad
from analytic_denoisers import metrics
from analytic_denoisers.bench.protocol import DEFAULT_REFERENCE
from analytic_denoisers.core.noise import seeded_noise
from analytic_denoisers.scales import snr_resolution_schedule
from common import add_data_options, markdown_table, report_header, training_images, write_report

# (label, weight, n_components, largest crop side or None) in the order of the table
CONFIGURATIONS = [
    ("PSPC alone (w = 0)", 0.0, 10, None),
    ("w = 0.25", 0.25, 10, None),
    ("**frozen: w = 0.5, K = 10**", 0.5, 10, None),
    ("w = 0.65", 0.65, 10, None),
    ("w = 0.8", 0.8, 10, None),
    ("mixture alone (w = 1)", 1.0, 10, None),
    ("w = 0.5, K = 50", 0.5, 50, None),
    ("w = 0.5, crops at most 21 px", 0.5, 10, 21),
    ("w = 0, crops at most 21 px", 0.0, 10, 21),
]


GREY = 0.8  # |x| below this: a grey pixel, neither background nor full ink
CONTROLS = [0.25, 0.5]  # weights of the averaged-samples controls


def grey_share(images):
    return float((images.abs() < GREY).double().mean())


def capped(schedule, cap):
    return schedule if cap is None else (lambda sigma: min(schedule(sigma), cap))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(parser, DEFAULT_REFERENCE)
    parser.add_argument("-n", "--samples", type=int, default=32, help="seeds 0 .. n - 1 (default 32)")
    parser.add_argument("-o", "--out", help="markdown report (a .json with the numbers is written beside it)")
    args = parser.parse_args()

    X = training_images(args)
    sigmas = ad.schedules.karras(10, 0.002, 80.0, 7.0)
    snr = snr_resolution_schedule(X, sigmas[:-1])
    noise = seeded_noise(range(args.samples), X.shape[1:])
    with torch.no_grad():
        reference = ad.sample(ad.load(args.reference), noise, sigmas, "heun")
    rows, numbers, finals = [], [], {}

    def add(label, final, seconds, **config):
        s = metrics.summarise(final, reference)
        numbers.append({"label": label, **config, "seconds": seconds, "grey_share": grey_share(final),
                        **{key: s[key] for key in ("r2", "r2_q25", "r2_q75", "pearson", "pearson_q25", "pearson_q75")}})
        rows.append([label, f"{s['r2']:.3f} [{s['r2_q25']:.3f}, {s['r2_q75']:.3f}]",
                     f"{s['pearson']:.3f} [{s['pearson_q25']:.3f}, {s['pearson_q75']:.3f}]",
                     f"{grey_share(final):.3f}", "–" if seconds is None else f"{seconds:.0f}"])
        print(" | ".join(rows[-1]), flush=True)

    for label, weight, k, cap in CONFIGURATIONS:
        start = time.perf_counter()
        den = ad.AnchoredCompositeDenoiser(patch_size=capped(snr, cap), weight=weight, n_components=k).fit(X)
        with torch.no_grad():
            finals[label] = ad.sample(den, noise, sigmas, "heun")
        add(label, finals[label], time.perf_counter() - start, weight=weight, n_components=k, max_crop=cap)
    local, anchor = finals[CONFIGURATIONS[0][0]], finals["mixture alone (w = 1)"]
    for w in CONTROLS:
        add(f"control: samples of PSPC and the mixture averaged, w = {w}", (1 - w) * local + w * anchor, None,
            control_weight=w)
    lines = report_header(f"Ablation of the anchored patch composite ({args.dataset}, {len(X)} training images)")
    lines += [f"Reference: `{os.path.relpath(args.reference)}` (grey share of its samples: {grey_share(reference):.3f}). "
              f"{args.samples} seeds, Heun with 10 Karras steps from σ = 80; crops from the data's SNR rule unless "
              "capped; final samples against the reference's. Controls: final samples averaged after sampling "
              f"(not a denoiser). Grey share: pixels with |x| < {GREY}.", ""]
    lines += markdown_table(["configuration", "R² mean [q25, q75]", "median r [q25, q75]", "grey share",
                             "seconds (fit + sampling)"], rows)
    write_report(lines, args.out)
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(
            {"reference": os.path.relpath(args.reference), "reference_grey_share": grey_share(reference),
             "configurations": numbers}, indent=1) + "\n")


if __name__ == "__main__":
    main()
