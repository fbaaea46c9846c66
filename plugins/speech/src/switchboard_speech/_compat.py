"""``audioop`` imported once, quietly: deprecated in Python 3.11/3.12, gone in 3.13, where
the ``audioop-lts`` distribution (a dependency there) provides it."""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["audioop"]
