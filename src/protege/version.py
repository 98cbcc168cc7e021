"""protege's version: its own module, so a part can name it without importing the package's re-exports."""

__version__ = "0.1.0"
