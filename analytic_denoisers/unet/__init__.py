"""Layer 3: the reference network, a small DDPM-style UNet behind EDM preconditioning.

* :mod:`.network`: :class:`~.network.UNet`, the noise-conditional network ``F(x, c_noise)`` of Ho
  et al. (arXiv 2006.11239): residual blocks with GroupNorm, a sinusoidal noise embedding,
  optional self-attention at the lowest resolution;
* :mod:`.precond`: :class:`~.precond.EDMPrecond` (with
  :func:`~analytic_denoisers.sampling.parameterizations.edm_coefficients`) makes it
  sigma-native (Karras et al., arXiv 2206.00364, Table 1):
  ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)``;
* :mod:`.training`: one resumable training run with the EDM loss, its checkpoints and loss log;
* :mod:`.estimator`: :class:`~.estimator.UNetDenoiser`, the estimator: ``fit`` trains the
  network, and ``denoise`` meets the same contract as every analytical denoiser. ``save``
  writes its exponential-moving-average (EMA) weights to HDF5.
"""
