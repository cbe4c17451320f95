"""Layer 1: pure tensor math, no estimators.

* :mod:`.softmax`: the streaming log-sum-exp accumulator every softmax denoiser uses, and the
  one chunk-size rule;
* :mod:`.moments`: mergeable sufficient statistics (count, mean, scatter);
* :mod:`.wiener`: Wiener gains, the Gaussian posterior mean and its closed-form flow;
* :mod:`.empirical`, :mod:`.locality`, :mod:`.patches`, :mod:`.patch_index`: the
  ``*_posterior_mean`` kernel of each method.

Each public ``*_posterior_mean`` validates its inputs (images, sigma, training data, masks and
statistics against the images), accepts sigma as a float or a tensor of shape (N,), lets
autograd reach ``x`` (all but PCA-locality, which reuses a work space in place), and is tested
against an explicit-loop float64 reference.
"""
