"""Fixtures of the SIP tests (defined in sip_peers, shared with the IVR's tests)."""

from sip_peers import kam, phones

__all__ = ["kam", "phones"]
