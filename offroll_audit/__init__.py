"""offroll-audit: find schools whose exits to home education their intake does not explain."""

__version__ = "0.1.0"


def tool_block(**extra: str) -> dict[str, str]:
    """Who wrote an output, for manifests and results.json."""
    return {"name": "offroll-audit", "version": __version__, **extra}
