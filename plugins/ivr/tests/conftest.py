"""Fixtures of the IVR's end-to-end tests: Kamailio and SIPp phones, from the SIP tests."""

from sip_peers import kam, phones

__all__ = ["kam", "phones"]
