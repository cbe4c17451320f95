"""Train a small diffusers ``UNet2DModel`` on the shipped default data and save it as a
``DDPMPipeline`` folder: a stand-in for "a researcher's own network" (eps-prediction, DDPM linear
betas over 1000 steps), for ``analytic-denoisers bench --reference FOLDER``.

    python benchmarks/train_diffusers_unet.py --steps 600 -o out/diffusers-unet

Training is the DDPM loss (Ho et al., arXiv 2006.11239): uniform timesteps, ``x_t =
sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``, MSE on eps. Seeded; prints the loss as it goes.
"""

import argparse
import time

import torch
from tqdm.auto import tqdm

import analytic_denoisers as ad
from analytic_denoisers.core.compat import import_diffusers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps (default 600)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--out", default="out/diffusers-unet", help="pipeline folder to write")
    args = parser.parse_args()
    diffusers = import_diffusers()

    X = ad.datasets.load("default")  # (10000, 1, 28, 28) in [-1, 1]
    torch.manual_seed(args.seed)
    unet = diffusers.UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                                 layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    alpha_bars = scheduler.alphas_cumprod
    optimiser = torch.optim.AdamW(unet.parameters(), lr=args.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / 50))
    generator = torch.Generator().manual_seed(args.seed)
    start, bar = time.perf_counter(), tqdm(range(args.steps), desc="training", unit="step")
    for step in bar:
        x0 = X[torch.randint(len(X), (args.batch_size,), generator=generator)]
        t = torch.randint(1000, (args.batch_size,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        a = alpha_bars[t].reshape(-1, 1, 1, 1)
        loss = (unet(a.sqrt() * x0 + (1 - a).sqrt() * eps, t).sample - eps).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        warmup.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    diffusers.DDPMPipeline(unet=unet.eval(), scheduler=scheduler).save_pretrained(args.out)
    print(f"trained {args.steps} steps in {time.perf_counter() - start:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
