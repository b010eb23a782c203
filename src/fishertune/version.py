"""The package's version, in one place: the root re-exports it (`fishertune.__version__`), and modules inside
the package import it from here, never from the root. Keep it equal to `version` in pyproject.toml."""

__version__ = "0.1.1"
