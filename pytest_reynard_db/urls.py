"""URL helpers: parsing with a clear error, and masking passwords for display."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError


def parse_url(url: str | URL, *, origin: str = "URL") -> URL:
    """Parse ``url``; a malformed one is a ``ConfigError`` naming where it came from."""
    if isinstance(url, URL):
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"{origin}: malformed database URL {mask_url(url)!r}") from exc
    if not parsed.drivername.startswith("postgresql"):
        raise ConfigError(f"{origin}: not a PostgreSQL URL: {mask_url(parsed)!r}")
    return parsed


def mask_url(url: str | URL) -> str:
    """The URL as text with its password replaced by ``***``; never raises."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        # Unparseable: hide everything between "://" and "@", where a password would be.
        scheme, sep, rest = url.partition("://")
        if sep and "@" in rest:
            return f"{scheme}://***@{rest.rpartition('@')[2]}"
        return url


def with_driver(url: URL) -> URL:
    """Use psycopg 3 when the URL names no driver (``postgresql://``)."""
    if url.drivername == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    return url


def with_database(url: str | URL, database: str) -> URL:
    """The same server and credentials, another database."""
    return with_driver(parse_url(url)).set(database=database)
