"""Which webhook URLs Hark may call, parsed once into the exact target the connection will use.

Used by the API when a request names a ``webhook_url`` (refused with a 400) and by the worker right
before each delivery attempt, which then connects to the addresses checked here and nowhere else:
the URL is parsed by one parser (urllib3's ``parse_url``) and the name resolved once, so neither a
parser disagreement (``http://127.0.0.1:7188\\@hooks.partner.example/``) nor a DNS answer that
changes between check and connect (rebinding) can reach another host.

Syntax (refused otherwise): ASCII, only RFC 3986 characters (so no backslash, space or control
character), ``http`` or ``https``, no userinfo (``user@``), no fragment, a DNS name made of letters,
digits and hyphens or a canonical IPv4 / bracketed IPv6 literal (no zone), a port in 1-65535.

Allow-list (``HARK_WEBHOOK_ALLOWED_HOSTS``; empty refuses every webhook):

- a host name is allowed by an exact entry or a ``*.domain`` wildcard (any subdomain, not the bare
  domain); every address it resolves to must then be globally routable (``ipaddress`` ``is_global``:
  not loopback, private, carrier-grade NAT 100.64.0.0/10, link-local, multicast, reserved...) or
  inside a listed IP/CIDR;
- a host name no host entry allows is allowed when every address it resolves to is inside a listed
  IP/CIDR (e.g. ``hooks.internal`` with ``10.0.0.0/8``);
- an IP literal is allowed only inside a listed IP/CIDR (listing it is the operator's explicit
  choice, which is how a test deployment allows ``127.0.0.1``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

SCHEMES = {"http": 80, "https": 443}
#: RFC 3986 unreserved + reserved characters, and '%' (checked to start a pct-encoding below).
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: IANA special-purpose blocks that older Python patch releases still call global (3.11.7 does).
_NOT_GLOBAL: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n) for n in ("192.0.0.0/24", "64:ff9b:1::/48", "5f00::/16", "3fff::/20", "2001::/23")
)
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


class WebhookRefused(ValueError):
    """The webhook URL is malformed or not allowed; the message says why (and what to set)."""


class UnresolvableHost(WebhookRefused):
    """The host name did not resolve (possibly a passing DNS failure: worth a later attempt)."""


@dataclass(frozen=True)
class CheckedTarget:
    """A webhook URL that passed the policy: exactly what the delivery connects to."""

    scheme: str
    host: str
    """Lower-case DNS name or IP literal (no brackets, no trailing dot): Host header, SNI, certificate."""
    port: int
    request_target: str
    """Path and query as sent on the request line (``/`` at least)."""
    addresses: tuple[str, ...]
    """The resolved addresses that passed the policy; the only ones the delivery may connect to."""
    is_ip_literal: bool = False

    @property
    def host_header(self) -> str:
        """``Host:`` value: the name, with the port when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """``scheme://host[:port]``: safe to log (no path or query, which may carry a receiver's token)."""
        return f"{self.scheme}://{self.host_header}"


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (``socket.getaddrinfo``), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_webhook_url(url: str, allowed: Iterable[str], resolver: Resolver | None = None) -> CheckedTarget:
    """Parse `url` strictly, resolve its host once and apply the allow-list.

    Args:
        url: The webhook URL from the request (or the job state).
        allowed: ``HARK_WEBHOOK_ALLOWED_HOSTS`` entries (hosts, ``*.domain``, IPs, CIDRs).
        resolver: Host name -> addresses (default: DNS via :func:`resolve_host`); for tests.

    Returns:
        The checked target; connect only to its ``addresses``.

    Raises:
        WebhookRefused: The URL is malformed, not http(s), not allowed, or resolves to an address
            that is neither globally routable nor listed. ``UnresolvableHost`` when DNS fails.
    """
    hosts, wildcards, networks = _parse_entries(allowed)
    if not (hosts or wildcards or networks):
        raise WebhookRefused("webhooks are disabled on this server: the operator must list allowed hosts in "
                             "HARK_WEBHOOK_ALLOWED_HOSTS")  # fmt: skip
    scheme, host, literal, port, request_target = _parse(url)
    if literal is not None:
        if not _in_networks(literal, networks):
            raise WebhookRefused(f"webhook host {host} is not allowed (HARK_WEBHOOK_ALLOWED_HOSTS)")
        return CheckedTarget(scheme, host, port, request_target, (str(literal),), is_ip_literal=True)

    by_name = host in hosts or any(host.endswith(suffix) for suffix in wildcards)
    try:
        addresses = [ipaddress.ip_address(a) for a in (resolver or resolve_host)(host, port)]
    except (OSError, UnicodeError, ValueError) as error:
        raise UnresolvableHost(f"webhook host {host} cannot be resolved ({error})") from None
    if not addresses:
        raise UnresolvableHost(f"webhook host {host} cannot be resolved (no addresses)")
    for address in addresses:
        if _in_networks(address, networks):
            continue
        if not by_name:
            raise WebhookRefused(f"webhook host {host} is not allowed (HARK_WEBHOOK_ALLOWED_HOSTS)")
        if not is_public(address):
            raise WebhookRefused(
                f"webhook host {host} resolves to the internal address {address}, which is refused unless "
                "that address (or a CIDR containing it) is listed in HARK_WEBHOOK_ALLOWED_HOSTS"
            )
    return CheckedTarget(scheme, host, port, request_target, tuple(dict.fromkeys(str(a) for a in addresses)))


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address (IPv4 inside IPv6 mapping / 6to4 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and not is_public(embedded):
            return False
    return address.is_global and not (
        address.is_multicast or address.is_private or address.is_loopback or address.is_link_local
        or address.is_reserved or address.is_unspecified
        or any(address.version == net.version and address in net for net in _NOT_GLOBAL)
    )  # fmt: skip


def _parse(url: str) -> tuple[str, str, IPAddress | None, int, str]:
    """(scheme, host, IP literal or None, port, request target) of a syntactically strict URL.

    Messages never repeat the URL: its path or query may hold the receiver's token, and they are logged.
    """
    if not url.isascii():
        raise WebhookRefused("webhook_url must be ASCII (percent-encode other characters)")
    if not _URI_CHARS.fullmatch(url) or _BAD_PERCENT.search(url):
        bad = "a backslash" if "\\" in url else "characters outside RFC 3986 (or a bad %-escape)"
        raise WebhookRefused(f"webhook_url contains {bad}")
    if "#" in url:
        raise WebhookRefused("webhook_url must not have a fragment ('#')")
    scheme_part, sep, rest = url.partition("://")
    if not sep or scheme_part.lower() not in SCHEMES:
        raise WebhookRefused("webhook_url must be an http:// or https:// URL")
    authority = re.split(r"[/?]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise WebhookRefused("webhook_url must not carry userinfo ('user@' or 'user:password@' before the host)")
    try:
        parsed = parse_url(url)
    except LocationParseError:
        raise WebhookRefused("webhook_url is not a valid URL (its host or port cannot be parsed)") from None
    if parsed.auth is not None or parsed.fragment is not None or parsed.scheme not in SCHEMES:
        raise WebhookRefused("webhook_url is not a valid URL")
    host = (parsed.host or "").lower()
    if not host:
        raise WebhookRefused("webhook_url names no host")
    port = parsed.port or SCHEMES[parsed.scheme]
    if not 1 <= port <= 65535 or parsed.port == 0:
        raise WebhookRefused("webhook_url has an invalid port (1-65535)")
    literal = _literal(host)
    if literal is None:
        host = host.removesuffix(".")
        _check_name(host)
    return parsed.scheme, str(literal) if literal is not None else host, literal, port, parsed.request_uri


def _literal(host: str) -> IPAddress | None:
    """The IP of a canonical literal host (``1.2.3.4`` or ``[v6]``), else None; other numeric forms refused."""
    if host.startswith("["):
        try:
            return ipaddress.IPv6Address(host[1:-1]) if host.endswith("]") and "%" not in host else None
        except ValueError:
            pass
        raise WebhookRefused(f"webhook host {host} is not a valid IPv6 literal")
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        pass
    try:  # "2130706433", "0x7f.1", "127.1": numbers the resolver would turn into an address
        socket.inet_aton(host)
    except OSError:
        return None
    raise WebhookRefused(f"webhook host {host} is not a canonical IPv4 address (write it as a.b.c.d)")


def _check_name(host: str) -> None:
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise WebhookRefused(f"webhook host {host[:100]} is not a valid host name (letters, digits, '-', '_', '.')")


def _parse_entries(allowed: Iterable[str]) -> tuple[set[str], list[str], list[IPNetwork]]:
    hosts: set[str] = set()
    wildcards: list[str] = []
    networks: list[IPNetwork] = []
    for raw in allowed:
        entry = raw.strip().lower().rstrip(".")
        if not entry:
            continue
        if entry.startswith("*."):
            wildcards.append(entry[1:])  # ".example.com"
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            hosts.add(entry)
    return hosts, wildcards, networks


def _in_networks(address: IPAddress, networks: list[IPNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)
