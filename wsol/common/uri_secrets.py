"""Credentials inside a URI, found and masked: a search logs and saves the URIs it is given,
and an error message that echoes one would print the secret."""

from __future__ import annotations

import re
import urllib.parse

CLOUD_SCHEMES = ("s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss", "az", "wasbs")
# Query parameters that carry a secret (pyarrow's S3 URIs take access_key and secret_key).
_SECRET_QUERY = re.compile(r"(?i)(?<![^&])(password|passwd|secret|secret_key|access_key|"
                           r"session_token|token)=[^&]*")


def uri_kind(uri: str) -> str:
    """mlflow (an HTTP server), cloud (object storage) or database."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    return "mlflow" if scheme in ("http", "https") else \
        "cloud" if scheme in CLOUD_SCHEMES else "database"


def masked_uri(uri: str) -> str | None:
    """`uri` with its credentials shown as ***, or None when it holds none. Any user part
    counts for an HTTP or cloud URI (an S3 user part is the access key); a database URI may
    name its user, not its password."""
    parts = urllib.parse.urlsplit(uri)
    user_part = "@" in parts.netloc and (uri_kind(uri) != "database"
                                         or parts.password is not None)
    if not user_part and not _SECRET_QUERY.search(parts.query):
        return None
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(
        netloc=f"***@{host}" if user_part else parts.netloc,
        query=_SECRET_QUERY.sub(r"\1=***", parts.query)))


def shown(value: object) -> str:
    """repr() of a configuration value for an error message, a URI's credentials masked."""
    if isinstance(value, str) and "://" in value:
        masked = masked_uri(value)
        if masked is not None:
            return repr(masked)
    return repr(value)
