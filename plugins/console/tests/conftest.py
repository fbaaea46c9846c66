"""Fixtures of the console's tests: Kamailio and SIPp phones (from the SIP plugin's tests);
``db_url`` and ``open_sb`` come from :mod:`switchboard.testing` (a pytest plugin)."""

from sip_peers import kam, phones

__all__ = ["kam", "phones"]
