"""How much a reference network's samples memorise its training images.

For each of n samples (Heun, 18 Karras steps from σ = 80, seeds 0 .. n - 1) and each of n held-out
test images: the Euclidean distance to the nearest training image, d1, and the ratio d1 / d2 to
the second nearest. A memorising network's samples sit much closer to a training image than
held-out images of the same distribution do; Carlini et al. (arXiv 2301.13188) call a sample a copy
when d1 / d2 < 1/3. Images in [-1, 1], distances in those units.

    python benchmarks/memorisation.py -o benchmarks/results/memorisation-fashion-mnist-10k.md
    python benchmarks/memorisation.py --dataset mnist --root DATA --limit 10000 --reference out/unet-mnist10k.h5 \\
        -o benchmarks/results/mnist/memorisation-mnist-10k.md
"""

import argparse
import os

import torch

import analytic_denoisers as ad
from analytic_denoisers.bench.protocol import DEFAULT_REFERENCE
from analytic_denoisers.core.noise import seeded_noise
from common import add_data_options, markdown_table, report_header, training_images, write_report

COPY_RATIO = 1 / 3


def nearest_two(x, data, chunk=2048):
    """(d1, d2): distances from each image of ``x`` (N, ...) to its nearest and second-nearest
    image of ``data`` (M, ...), float64, by exact pairwise distances in chunks of ``data``."""
    q = x.flatten(1).double()
    best = torch.full((len(q), 2), torch.inf, dtype=torch.float64)
    for start in range(0, len(data), chunk):
        d = torch.cdist(q, data[start:start + chunk].flatten(1).double())
        best = torch.cat([best, d], 1).topk(2, dim=1, largest=False).values
    return best[:, 0], best[:, 1]


def summary(label, d1, d2):
    q = torch.quantile(d1, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    ratio = d1 / d2
    return [label, f"{q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}]", f"{float(d1.min()):.2f}",
            f"{float(ratio.median()):.3f}", f"{int((ratio < COPY_RATIO).sum())} / {len(d1)}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_options(parser, DEFAULT_REFERENCE)
    parser.add_argument("-n", type=int, default=64, help="samples and held-out images (default 64)")
    parser.add_argument("-o", "--out")
    args = parser.parse_args()
    X = training_images(args)
    test = ad.datasets.load(args.dataset, "test", root=args.root, progress=False)[:args.n]
    with torch.no_grad():
        samples = ad.sample(ad.load(args.reference), seeded_noise(range(args.n), X.shape[1:]),
                            ad.schedules.karras(18, 0.002, 80.0, 7.0), "heun")
    rows = [summary("network samples", *nearest_two(samples, X)), summary("held-out test images", *nearest_two(test, X))]
    lines = report_header(f"Memorisation of `{os.path.relpath(args.reference)}` ({args.dataset}, {len(X)} training images)")
    lines += [f"{args.n} samples (Heun, 18 Karras steps from σ = 80, seeds 0–{args.n - 1}) and the first {args.n} "
              "held-out test images; d1 the distance to the nearest training image, d2 to the second nearest "
              "([-1, 1] units; a copy: d1 / d2 < 1/3).", ""]
    lines += markdown_table(["images", "d1 median [q25, q75]", "smallest d1", "median d1 / d2", "copies (d1/d2 < 1/3)"],
                            rows)
    write_report(lines, args.out)


if __name__ == "__main__":
    main()
