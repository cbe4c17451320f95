"""Layer 2: one thin estimator per method.

Each estimator declares its hyper-parameters (``_parameter_constraints``), checks them in
``fit`` and ``set_params``, holds the fitted state, and calls its method's
``*_posterior_mean`` kernel from :mod:`analytic_denoisers.kernels`.
"""
