"""Finding the SIP server by DNS (RFC 3263): NAPTR and SRV records served by a real DNS
server (dnsmasq) on loopback, Kamailio behind them."""

from __future__ import annotations

from pathlib import Path

from sip_peers import open_sip

from switchboard.channels import ChannelState
from switchboard_sip.locate import locate
from switchboard_sip.testing import Dnsmasq, Kamailio

DOMAIN = "sip.test"


async def test_naptr_picks_tls_and_srv_the_host_and_port(tmp_path: Path) -> None:
    """``transport = "auto"``: NAPTR prefers SIPS+D2T, its SRV names the proxy's TLS port;
    Switchboard registers there over TLS, as sip:switchboard@sip.test, and checks the
    proxy's certificate against the domain's name."""
    kam = Kamailio(tmp_path / "kamailio", tls=True, domain=DOMAIN).start()
    dns = Dnsmasq(
        tmp_path / "dns",
        naptr=[
            (DOMAIN, 10, 10, "SIPS+D2T", f"_sips._tcp.{DOMAIN}"),
            (DOMAIN, 20, 10, "SIP+D2U", f"_sip._udp.{DOMAIN}"),
        ],
        srv=[
            (f"_sips._tcp.{DOMAIN}", f"pbx.{DOMAIN}", kam.tls_port, 10, 10),
            (f"_sip._udp.{DOMAIN}", f"pbx.{DOMAIN}", kam.port, 10, 10),
        ],
        hosts=[(f"pbx.{DOMAIN}", "127.0.0.1")],
    ).start()
    try:
        sb = await open_sip(
            tmp_path,
            kam,
            server=DOMAIN,
            port=0,
            transport="auto",
            dns_servers=[dns.server],
            tls_ca_file=str(kam.ca_file),
        )
        try:
            handle = sb.channels["sip"]
            assert handle.state is ChannelState.RUNNING, handle.last_error
            ua = handle.channel.ua
            assert (ua.transport.name, ua.port, ua.aor) == (
                "TLS",
                kam.tls_port,
                f"sip:switchboard@{DOMAIN}",
            )
            assert "transport=tls" in kam.registered()
        finally:
            await sb.close()
    finally:
        dns.stop()
        kam.stop()


async def test_srv_for_the_configured_transport_and_fallbacks(tmp_path: Path) -> None:
    dns = Dnsmasq(
        tmp_path / "dns",
        srv=[(f"_sip._udp.{DOMAIN}", f"pbx.{DOMAIN}", 5088, 10, 10)],
        hosts=[(f"pbx.{DOMAIN}", "127.0.0.1"), (f"bare.{DOMAIN}", "127.0.0.3")],
    ).start()
    try:
        servers = [dns.server]
        found = await locate(DOMAIN, transport="udp", nameservers=servers)
        assert (found.host, found.port, found.transport) == ("127.0.0.1", 5088, "udp")
        # no NAPTR: the SRV names are tried, TLS first; only UDP's exists
        found = await locate(DOMAIN, transport="auto", nameservers=servers)
        assert (found.port, found.transport) == (5088, "udp")
        # no records: the host itself on the transport's port
        found = await locate(f"bare.{DOMAIN}", transport="tls", nameservers=servers)
        assert (found.host, found.port, found.transport) == ("127.0.0.3", 5061, "tls")
        # a port or an address given: no lookups at all
        found = await locate(DOMAIN, transport="tcp", port=5070, nameservers=servers)
        assert (found.host, found.port, found.how) == (DOMAIN, 5070, "as configured")
        # a DNS server that does not answer: the name as it is, after the timeout
        found = await locate(DOMAIN, transport="udp", nameservers=["127.0.0.1:9"])
        assert (found.host, found.port) == (DOMAIN, 5060)
    finally:
        dns.stop()
