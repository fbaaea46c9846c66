"""``audioop`` and pyVoIP imported once, quietly.

``audioop`` is deprecated in Python 3.11/3.12 and gone in 3.13, where the ``audioop-lts``
distribution (a dependency there) provides it; pyVoIP imports it too.
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

    from pyVoIP.RTP import PayloadType

__all__ = ["PayloadType", "audioop"]
