"""URLs and how text is shown: parsing with a clear error, the target a URL really names,
masking; messages on one line (masked), short paths, counts and tables.

``mask_url`` and ``redact`` are the one place where secrets leave output: every
error, table, header and JSON message that can hold a URL goes through them.
They work on text, not on a parsed URL, so that a malformed URL (a password
holding ``@``, a missing scheme, ``postgresql:/...``) is masked as safely as a
well-formed one: everything a password could be in is replaced by ``***``.

A password is masked where it stands (a URL's user part, ``password=``), and nothing
else: a password the tool was given (``remember_secrets``) is also removed from free
text, outside URLs, as a whole token only, and only where it can be told apart from
the names the URLs show. The README's CI password ``postgres`` is also the user, the
database and a prefix of the scheme: removed wherever its letters appeared, every
message read ``***ql+psycopg://***:***@localhost:5432/***``.

The text helpers every message and report shares sit here, beside the masking they
all go through: ``one_line`` masks what it folds (an exception's text may hold anyone's
URL), ``first_line`` an error's summary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, unquote

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from .errors import ConfigError

#: Query-string and conninfo keys whose values are secrets.
SECRET_KEYS = ("password", "sslpassword")
#: Query-string keys that change which server or database a URL reaches (libpq's).
TARGET_KEYS = ("dbname", "database", "host", "hostaddr", "port", "service")
MAINTENANCE_DATABASE = "postgres"
_REMEMBERED: set[str] = set()
#: What the remembered URLs show besides their passwords (user, host, port, database):
#: a password equal to one of them cannot be told apart from it in free text.
_SHOWN: set[str] = set()
#: A remembered password shorter than this is masked by its place only: as a token it
#: would be any short word ("-p", "a b").
MIN_TOKEN = 4

#: C0 and C1 control characters and DEL.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):(//)?")
# password=..., ?password=..., 'password': '...', password: ..., PGPASSWORD=...
_SECRET_PARAM = re.compile(
    r"(?i)(['\"]?\b(?:pg)?(?:" + "|".join(SECRET_KEYS) + r")['\"]?)(\s*[=:]\s*)"
    r"('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^&\s,;)}]*)"
)
# A URL inside free text (an exception message): a scheme, then anything up to white
# space or a closing quote or bracket.
# "user:password@host" without a scheme, in free text.
_USER_PASSWORD = re.compile(r"(?<![\w/:*])([\w.\-]+):(?!\*\*\*@)[^\s@/'\"]+@")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/{1,2}[^\s'\"<>)\]]+")


def parse_url(url: str | URL, *, origin: str = "URL") -> URL:
    """Parse ``url``; a malformed one is a ``ConfigError`` naming where it came from."""
    if isinstance(url, URL):
        return url
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"{origin}: malformed database URL {mask_url(url)!r}") from exc
    scheme, plus, driver = parsed.drivername.partition("+")
    if scheme == "postgres":
        # libpq's other scheme (Heroku's and many platforms' DATABASE_URL), which
        # SQLAlchemy 1.4 dropped: the same server, read as libpq reads it
        parsed = parsed.set(drivername=f"postgresql{plus}{driver}")
    if not parsed.drivername.startswith("postgresql"):
        raise ConfigError(f"{origin}: not a PostgreSQL URL: {mask_url(parsed)!r}")
    try:
        parsed.get_dialect()  # the dialect's module, not its driver (require_driver's)
    except NoSuchModuleError:
        raise ConfigError(
            f"{origin}: {mask_url(parsed)}: unknown driver {parsed.get_driver_name()!r}; "
            "SQLAlchemy's PostgreSQL drivers are psycopg, psycopg2, asyncpg, pg8000 "
            "(postgresql+psycopg://...)"
        ) from None
    check_names(parsed, origin=origin)
    return parsed


def check_names(url: URL, *, origin: str) -> None:
    """No control character in what a URL names: a NUL in a database name ended libpq's
    conninfo there, and the host and port after it were dropped (the default server)."""
    parts: dict[str, str | None] = {
        "user": url.username,
        "host": url.host,
        "database": url.database,
    }
    for key, value in url.query.items():
        parts[key] = value if isinstance(value, str) else ",".join(value)
    for what, part in parts.items():
        if part:
            refuse_control_characters(part, what=f"{origin}: {mask_url(url)}: {what}")


def escaped(value: str) -> str:
    """``value`` with each control character written as an escape (``\\x00``): what a
    message shows of a name, so that a terminal never acts on one."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], value)


def refuse_control_characters(value: str, *, what: str) -> None:
    """A name a user gives (a database, a message, a branch label) with a control
    character in it is refused, shown escaped: a terminal would act on an escape."""
    found = _CONTROL.search(value)
    if found:
        raise ConfigError(
            f"{what}: control character U+{ord(found.group()):04X} in {value!r}; "
            "names may not hold control characters"
        )


def admin_url(url: str | URL, *, origin: str) -> URL:
    """An admin URL with its real target in plain sight.

    libpq lets the query string override the path and the host (``.../postgres?dbname=prod``
    reaches ``prod``), so a check on ``url.database`` alone could be walked around.
    The query's ``dbname``, ``host`` and ``port`` are folded into the URL proper,
    and what cannot be folded (``hostaddr``, ``service``, several hosts) is refused:
    the harness must know which server and database it talks to.
    """
    parsed = with_driver(parse_url(url, origin=origin))
    query = dict(parsed.query)
    for key in ("hostaddr", "service"):
        if key in query:
            raise ConfigError(
                f"{origin}: {mask_url(parsed)}: {key}= in the query string is not supported "
                "for the harness's server; name the host and port in the URL"
            )
    values: dict[str, str] = {}
    for key in ("dbname", "database", "host", "port"):
        value = query.pop(key, None)
        if value is None:
            continue
        if not isinstance(value, str) or "," in value:
            raise ConfigError(f"{origin}: {mask_url(parsed)}: several {key} values; give one")
        values[key] = value
    database = values.get("dbname") or values.get("database") or parsed.database
    host = values.get("host", parsed.host)
    port = values.get("port", parsed.port)
    try:
        port_number = int(port) if port is not None and port != "" else None
    except ValueError:
        raise ConfigError(f"{origin}: {mask_url(parsed)}: port {port!r} is not a number") from None
    return parsed.set(
        host=host or None,
        port=port_number,
        database=database or MAINTENANCE_DATABASE,
        query=query,
    )


def mask_url(url: str | URL) -> str:
    """The URL as text with every place a password could be replaced by ``***``; never raises.

    Works on the text, so a URL that does not parse is masked too: the user part
    before the last ``@`` keeps only the user name, and ``password=`` parameters
    (query string or conninfo) lose their values.
    """
    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else str(url)
    scheme = _SCHEME.match(text)
    if scheme and not scheme.group(2) and not scheme.group(1).lower().startswith("postgres"):
        scheme = None  # "user:password@host": that is no scheme
    head, rest = (scheme.group(0), text[scheme.end() :]) if scheme else ("", text)
    if "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if "/" in user and not scheme:
            user = ""  # no scheme: cannot tell a path from a user name; show nothing
        rest = f"{user}{':***' if colon else ''}@{after}"
    elif scheme and ":" in rest.split("/", 1)[0] and not _looks_like_host_port(rest):
        # "scheme://user:password" with no host: the part after ':' may be a password
        rest = rest.split(":", 1)[0] + ":***"
    # In a URL, parameters are in its query only (a user or database named "password"
    # is a name); elsewhere (conninfo, free text) anywhere.
    where, query = rest.partition("?")[::2] if scheme else ("", rest)
    masked = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}***", query)
    return head + (f"{where}?{masked}" if scheme and "?" in rest else where + masked)


def remember_secrets(*values: str | URL | None) -> None:
    """Note the passwords of these URLs (or conninfo strings): ``redact`` removes them
    from free text too, outside anything that looks like a URL."""
    for value in values:
        if value:
            _REMEMBERED.update(_secret_pieces(_password_of(value)))
            _SHOWN.update(_shown_words(value))


def known_secrets() -> tuple[str, ...]:
    """Remembered passwords and those of URLs in the environment (read now), less those
    that are also a name a URL shows (user ``postgres``, password ``postgres``)."""
    found, shown = set(_REMEMBERED), set(_SHOWN)
    for value in os.environ.values():
        if "://" in value or "password" in value.lower():
            found.update(_secret_pieces(_password_of(value)))
            shown.update(_shown_words(value))
    return tuple(found - shown)


def _secret_pieces(password: str | None) -> set[str]:
    """A password, and its pieces: one holding "@" or "/" is split there by URL parsers,
    which then show its tail as a host ("failed to resolve host 'r3tPw@h'")."""
    if not password:
        return set()
    password = unquote(password)  # as a URL's text holds it, and as it is
    pieces = {password, quote(password, safe=""), *password.split("@"), *password.split("/")}
    return {piece for piece in pieces if len(piece) >= MIN_TOKEN}


def _shown_words(value: str | URL) -> set[str]:
    """The user, host, port and database a URL shows (nothing for what does not parse)."""
    try:
        url = value if isinstance(value, URL) else make_url(value)
    except (ArgumentError, ValueError):
        return set()
    return {str(part) for part in (url.username, url.host, url.port, url.database) if part}


def redact(text: object, secrets: tuple[str, ...] | None = None) -> str:
    """``text`` (an error message, a log line) with every URL in it masked.

    Outside URLs, ``user:password@`` and ``password=`` values are masked, and
    ``secrets`` (default: ``known_secrets()``) as whole tokens: never a part of a
    longer word, never inside a URL (masked by place there).
    """
    secrets = known_secrets() if secrets is None else secrets
    tokens = _token_pattern(secrets)
    source, out, last = str(text), [], 0
    for found in _URL_IN_TEXT.finditer(source):
        out += [_redact_prose(source[last : found.start()], tokens), mask_url(found.group(0))]
        last = found.end()
    out.append(_redact_prose(source[last:], tokens))
    return "".join(out)


def _redact_prose(text: str, tokens: re.Pattern[str] | None) -> str:
    text = _USER_PASSWORD.sub(r"\1:***@", text)
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    return tokens.sub("***", text) if tokens else text


def _token_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """Any of ``secrets`` with no word character on either side (the longest first)."""
    usable = sorted((s for s in set(secrets) if len(s) >= MIN_TOKEN), key=len, reverse=True)
    if not usable:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, usable)) + r")(?!\w)")


def with_driver(url: URL) -> URL:
    """Use psycopg 3 when the URL names no driver (``postgresql://``)."""
    if url.drivername == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    return url


def with_database(url: str | URL, database: str) -> URL:
    """The same server and credentials, another database."""
    return with_driver(parse_url(url)).set(database=database)


def _password_of(value: str | URL) -> str | None:
    """The password in a URL or conninfo, read as text: everything between the user's
    ``:`` and the *last* ``@`` (a URL parser stops at the first, and would show the rest
    as the host)."""
    if isinstance(value, URL):
        return value.password if isinstance(value.password, str) else None
    found = _SECRET_PARAM.search(value)
    if found:
        return found.group(3).strip("'\"")
    if "@" not in value:
        return None
    scheme = _SCHEME.match(value)
    userinfo = value[scheme.end() if scheme else 0 :].rpartition("@")[0]
    return userinfo.partition(":")[2] or None


def _looks_like_host_port(rest: str) -> bool:
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    return bool(re.fullmatch(r"[^:]*:\d+", netloc))


# -- how text is shown: one line, short paths, tables ----------------------------------


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` with every run of white space (newlines included) folded to one space,
    and any URL or known password in it masked (it may come from anyone's exception);
    cut to ``limit`` characters, ending in ``...``, when a limit is given."""
    flat = redact(" ".join(str(text).split()))
    if limit is None or len(flat) <= limit:
        return flat
    return flat[: limit - 3] + "..."


def counted(number: int, word: str, plural: str | None = None) -> str:
    """``1 check``, ``3 checks``: a count and its noun, singular for one."""
    return f"{number} {word if number == 1 else plural or word + 's'}"


def first_line(exc: BaseException | None) -> str:
    """The first line of an exception's message (a database error's own summary), masked;
    a warning raised as an error says so (``raised_warning``)."""
    text = str(exc).strip() if exc is not None else ""
    return (redact(text.splitlines()[0]) if text else type(exc).__name__) + raised_warning(exc)


#: What a warning raised as an exception is: the run's warning filters made it an error.
WARNING_AS_ERROR = (
    " (a {kind}, raised as an error by the warning filters: pytest's filterwarnings, -W or "
    "PYTHONWARNINGS; plain Alembic only warns)"
)


def raised_warning(exc: BaseException | None) -> str:
    """`` (a SAWarning, raised as an error by the warning filters...)`` for a warning raised
    as an exception (``filterwarnings = ["error"]``): the failure is the filter's, not the
    tree's; else nothing."""
    return WARNING_AS_ERROR.format(kind=type(exc).__name__) if isinstance(exc, Warning) else ""


def shown_path(path: str | Path | None) -> str:
    """``path`` relative to the current directory when it is below it, else as is."""
    if path is None:
        return ""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell, two spaces apart; the last one not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
