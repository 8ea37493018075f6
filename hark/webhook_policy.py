"""Which webhook URLs Hark may call: the operator's allow-list (``HARK_WEBHOOK_ALLOWED_HOSTS``).

Used twice: by the API when a request names a ``webhook_url`` (refused with a 400), and by the
worker right before each delivery (DNS may have changed since). Rules:

- the scheme is ``http`` or ``https`` and the URL names a host;
- the host is allowed by an entry: the exact host name, a ``*.domain`` wildcard (any subdomain,
  not the bare domain), or an IP address / CIDR that contains the host's IP literal;
- the host name is resolved, and if any address it resolves to is loopback, private, link-local,
  reserved, multicast or unspecified, it is refused unless the host is listed exactly or that
  address is inside a listed IP/CIDR (so ``*.example.com`` cannot be pointed at 127.0.0.1 or
  169.254.169.254 through DNS);
- a host name that no host entry allows is still allowed when every address it resolves to is
  inside a listed IP/CIDR (e.g. ``hooks.internal`` with ``10.0.0.0/8``).

An empty allow-list refuses every webhook.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (``socket.getaddrinfo``)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


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


def _is_internal(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback or address.is_private or address.is_link_local or address.is_reserved
        or address.is_multicast or address.is_unspecified
    )  # fmt: skip


def _in_networks(address: IPAddress, networks: list[IPNetwork]) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == net.version and address in net for net in networks)


def check_webhook_url(url: str, allowed: Iterable[str], resolver: Resolver | None = None) -> None:
    """Refuse a webhook URL the operator has not allowed.

    Args:
        url: The webhook URL from the request.
        allowed: ``HARK_WEBHOOK_ALLOWED_HOSTS`` entries (hosts, ``*.domain``, IPs, CIDRs).
        resolver: Host name -> addresses (default: DNS via :func:`resolve_host`); for tests.

    Raises:
        ValueError: The URL is malformed, not http(s), not allowed, or resolves to an internal
            address that is not explicitly allowed. The message says which and what to set.
    """
    hosts, wildcards, networks = _parse_entries(allowed)
    if not (hosts or wildcards or networks):
        raise ValueError("webhooks are disabled on this server: the operator must list allowed hosts in "
                         "HARK_WEBHOOK_ALLOWED_HOSTS")  # fmt: skip
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise ValueError(f"webhook_url is not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"webhook_url must be an http:// or https:// URL (got {url[:100]!r})")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise ValueError(f"webhook_url names no host (got {url[:100]!r})")
    port = port or (443 if parts.scheme == "https" else 80)

    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        if _in_networks(literal, networks):
            return
        raise ValueError(f"webhook host {host} is not allowed (HARK_WEBHOOK_ALLOWED_HOSTS)")

    exact = host in hosts
    by_wildcard = any(host.endswith(suffix) for suffix in wildcards)
    try:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in (resolver or resolve_host)(host, port)]
    except (OSError, ValueError) as error:
        raise ValueError(f"webhook host {host} cannot be resolved ({error})") from None
    if not addresses:
        raise ValueError(f"webhook host {host} cannot be resolved (no addresses)")
    if not (exact or by_wildcard):
        if all(_in_networks(address, networks) for address in addresses):
            return
        raise ValueError(f"webhook host {host} is not allowed (HARK_WEBHOOK_ALLOWED_HOSTS)")
    if exact:
        return
    for address in addresses:
        if _is_internal(address) and not _in_networks(address, networks):
            raise ValueError(
                f"webhook host {host} resolves to the internal address {address}, which is refused unless "
                "the host or that address is listed exactly in HARK_WEBHOOK_ALLOWED_HOSTS"
            )
