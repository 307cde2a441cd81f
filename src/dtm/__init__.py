"""dtm-py: the Python implementation of DTM, the distributed transaction manager."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
