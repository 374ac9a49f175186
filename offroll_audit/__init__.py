"""offroll-audit: find schools whose exits to home education their intake does not explain."""

__version__ = "0.1.0"
