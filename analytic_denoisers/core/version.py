"""The package version, in a leaf module that setup.cfg reads without importing the package."""

__version__ = "0.1.0"
