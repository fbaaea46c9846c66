"""Fixtures of the SIP tests (defined in sip_peers, shared with the IVR's tests)."""

from sip_peers import kam, kam_tls, phones, softphones

__all__ = ["kam", "kam_tls", "phones", "softphones"]
