"""README figure: the same noisy test images denoised by every method at three sigmas.

Fits every denoiser on the shipped default training subset (10,000 Fashion-MNIST images); the
patch sizes of the LS / ELS / bbELS machines and the crops of PSPC and the anchored composite
follow the data-derived SNR rule (``ad.scales.snr_resolution_schedule``); every other method has
its default hyper-parameters (PCA-locality threshold 0.005, GoldDiff 0.02, PSPC-Flex the Wiener
rows with the published CIFAR-10 mass schedule):

    python benchmarks/figures_methods.py --out docs/figures
"""

import argparse
import time
from pathlib import Path

import torch

import analytic_denoisers as ad
from analytic_denoisers.core.noise import seeded_noise
from analytic_denoisers.viz import save_labelled_rows

SIGMAS = (0.1, 0.5, 1.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures")
    parser.add_argument("-n", type=int, default=4, help="test images")
    args = parser.parse_args()

    X = ad.datasets.load("default", "train")
    test, labels = ad.datasets.load("default", "test", return_labels=True)
    x0 = test[[int((labels == k).nonzero()[0]) for k in (0, 3, 7, 9)][:args.n]]
    sizes = ad.scales.snr_resolution_schedule(X, SIGMAS)
    methods = {
        "Gaussian": ad.GaussianDenoiser(),
        "GMM (10 k-means)": ad.GaussianMixtureDenoiser(),
        "empirical": ad.EmpiricalOptimalDenoiser(),
        "nearest": ad.NearestNeighbourDenoiser(),
        "sigma-CFDM": ad.SmoothedClosedFormDenoiser(),
        "kNN (k=n=100)": ad.KNNScoreDenoiser(),
        "PCA-locality": ad.PCALocalityDenoiser(),
        "GoldDiff": ad.GoldDiffDenoiser(),
        "LS": ad.LocalScoreDenoiser(patch_size=sizes),
        "ELS": ad.LocalScoreDenoiser(patch_size=sizes, equivariant=True, padding="circular"),
        "bbELS": ad.LocalScoreDenoiser(patch_size=sizes, equivariant=True, padding="zeros"),
        "PSPC": ad.PatchCompositeDenoiser(patch_size=sizes),
        "PSPC-Flex (Wiener)": ad.PatchFlexDenoiser(),
        "anchored (PSPC + GMM)": ad.AnchoredCompositeDenoiser(patch_size=sizes),
    }
    for den in methods.values():
        den.fit(X)
    noise = seeded_noise(range(len(x0)), x0.shape[1:])
    noisy = [x0 + sigma * noise for sigma in SIGMAS]
    rows = [("clean (test)", torch.cat([x0] * len(SIGMAS))),
            ("noisy", torch.cat(noisy).clamp(-1, 1))]
    for name, den in methods.items():
        start = time.perf_counter()
        outs = [den(x, sigma).clamp(-1, 1) for x, sigma in zip(noisy, SIGMAS)]
        label = name + (f" P={','.join(str(sizes(s)) for s in SIGMAS)}" if "patch_size" in den.get_params() else "")
        rows.append((label, torch.cat(outs)))
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    path = Path(args.out) / "methods.png"
    columns = " | ".join(f"sigma={s:g}" for s in SIGMAS)
    save_labelled_rows(rows, path,
                       title=f"Held-out test images (fit: 10,000 default images); {len(x0)} per block: {columns}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
