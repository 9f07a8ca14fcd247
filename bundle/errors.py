"""The one exception of the bundle contract."""
from __future__ import annotations


class BundleError(ValueError):
    """A bundle that must not be served or published; the message names the file or field at fault."""
