"""The package version, in a module that imports nothing, so any module (and the build) can read it."""

__version__ = "0.2.0"
