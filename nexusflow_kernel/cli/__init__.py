"""The ``nexusflow`` command: ``main`` is its click group (``python -m nexusflow_kernel.cli``)."""

from .main import main

__all__ = ["main"]
