"""README figures of the foundation: denoising at several sigmas, and samples, on the default data.

Fits both denoisers on the shipped default training subset (10,000 Fashion-MNIST images),
denoises held-out test images with shared seeded noise, and samples from shared seeded noise:

    python benchmarks/figures_foundation.py --out docs/figures
"""

import argparse
from pathlib import Path

import torch

import analytic_denoisers as ad
from analytic_denoisers.core.noise import seeded_noise
from analytic_denoisers.viz import save_labelled_rows

SIGMAS = (0.1, 0.3, 1.0, 3.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("-n", type=int, default=10, help="images per row")
    args = parser.parse_args()
    out = Path(args.out)

    X = ad.datasets.load("default", "train")
    test, labels = ad.datasets.load("default", "test", return_labels=True)
    # one test image of each class, in class order
    picks = [int((labels == k).nonzero()[0]) for k in range(10)][:args.n]
    x0 = test[picks]
    gauss, emp = ad.GaussianDenoiser().fit(X), ad.EmpiricalOptimalDenoiser().fit(X)

    noise = seeded_noise(range(len(x0)), x0.shape[1:])
    rows = [("clean (test)", x0)]
    for sigma in SIGMAS:
        x = x0 + sigma * noise
        rows += [(f"noisy, sigma={sigma:g}", x.clamp(-1, 1)),
                 ("  Gaussian", gauss(x, sigma).clamp(-1, 1)),
                 ("  empirical", emp(x, sigma))]
    save_labelled_rows(rows, out / "denoising.png",
                       title="Held-out Fashion-MNIST test images, denoised (fit: 10,000 default images)")

    sigmas = ad.schedules.karras(18, 0.002, 80.0)
    z = seeded_noise(range(100, 100 + args.n), x0.shape[1:])
    g_samples = ad.sample(gauss, z, sigmas, "heun").clamp(-1, 1)
    e_samples = ad.sample(emp, z, sigmas, "heun")
    nearest = X[torch.cdist(e_samples.reshape(args.n, -1), X.reshape(len(X), -1)).argmin(1)]
    save_labelled_rows(
        [("Gaussian", g_samples), ("empirical", e_samples), ("  nearest train", nearest)],
        out / "samples.png",
        title="Heun, 18 Karras steps, same seeds: the empirical denoiser reproduces training images")
    print(f"wrote {out / 'denoising.png'} and {out / 'samples.png'}")
    print("empirical sample to nearest training image, max abs diff:",
          f"{(e_samples - nearest).abs().amax((1, 2, 3)).max():.2e}")


if __name__ == "__main__":
    main()
