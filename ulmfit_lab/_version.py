"""The package version, in a module of its own: modules that record it (export, serve) import it from here,
not from the package `__init__`, which imports them."""

__version__ = "0.1.0"
