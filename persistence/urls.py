"""From `DATABASE_URL` as pasted (Neon's console, a `.env` file) to SQLAlchemy's URL."""

from __future__ import annotations

import re
from urllib.parse import quote

from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from persistence.errors import ConfigurationError, register_secret

__all__ = ["normalize_url"]

_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}


def normalize_url(raw: str | URL, *, setting: str = "DATABASE_URL") -> URL:
    """Turn a URL as Neon's console gives it into one for SQLAlchemy's psycopg 3 dialect.

    `postgres://`, `postgresql://` and `postgresql+psycopg://` all mean psycopg 3; query
    parameters such as `sslmode=require&channel_binding=require` pass through to libpq.
    Raises `ConfigurationError` (echoing no part of the password, naming `setting`) for
    anything else: another scheme, a port that is not a number, or an unencoded "@" in the
    user name or password.
    """
    if isinstance(raw, URL):
        url = raw
    else:
        text = raw.strip()
        if text.startswith("postgres://"):
            text = "postgresql://" + text.removeprefix("postgres://")
        # The password as written (maybe percent-encoded), so that it is scrubbed too.
        written = _WRITTEN_PASSWORD.match(text)
        register_secret(written.group(1) if written else None)
        if text.count("@") > 1:
            # SQLAlchemy (and libpq) end the password at the first "@": the rest of it
            # would become the host and be echoed in every connection error.
            raise ConfigurationError(
                f"{setting} has more than one '@': only the one before the host may be "
                f"written as is. {_ENCODE_ADVICE}"
            )
        try:
            url = make_url(text)
        except ArgumentError:
            raise ConfigurationError(f"{setting} is not a valid URL: {_SHAPE}") from None
        except ValueError:
            # SQLAlchemy's int() of the port. Its text is not echoed: in a URL that lacks
            # the "@", what stands in the port's place is the password.
            raise ConfigurationError(
                f"{setting}'s port is not a number: {_SHAPE}. {_ENCODE_ADVICE}"
            ) from None
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigurationError(f"{setting}'s port must be 1 to 65535: {_SHAPE}")
    if url.drivername not in _SCHEMES:
        raise ConfigurationError(
            f"{setting} must be a PostgreSQL URL (postgresql://...), got scheme {url.drivername!r}"
        )
    password = url.password if isinstance(url.password, str) else None
    register_secret(password)
    register_secret(quote(password, safe="") if password else None)
    return url.set(drivername="postgresql+psycopg")


_SHAPE = "expected postgresql://user:password@host[:port]/database[?sslmode=require]"
_ENCODE_ADVICE = (
    "In the user name and password, write '@' as %40, ':' as %3A, '/' as %2F and '%' as %25."
)
# SQLAlchemy's own split: the user name ends at the first ":", the password at the next "@".
_WRITTEN_PASSWORD = re.compile(r"[\w+]+://[^:/]*:([^@]*)@")
