"""Layer 0: what every other layer builds on, importing nothing else from the package.

* :mod:`.contract`: the denoiser contract (``DenoiserMixin``, ``TrainingSetMixin``);
* :mod:`.validation`: input checks (images, sigma, labels, schedules) and declarative
  hyper-parameter constraints;
* :mod:`.fingerprint`: order-invariant data fingerprints and summaries;
* :mod:`.files`: atomic writes and the one JSON conversion;
* :mod:`.artifact`: the HDF5 file format of a fitted estimator;
* :mod:`.noise`: per-image seeded noise; :mod:`.batching`: batches and groups of queries;
* :mod:`.compat`: imports that need help on some installations; :mod:`.version`.
"""
