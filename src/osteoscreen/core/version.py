"""The package's version, recorded in every model, run and report."""

__version__ = "0.1.0"
