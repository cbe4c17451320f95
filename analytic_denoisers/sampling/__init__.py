"""Layer 1: samplers of the probability-flow ODE (plain functions of any denoiser), sigma
schedules, and the exact bridge between VP (DDPM) and VE (sigma) noise."""
