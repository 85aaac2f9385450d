"""Short-lived signed download URLs for attachments.

The URL carries its expiry and an HMAC-SHA256 over the workspace, email, filename and
expiry, under the service's `downloads` secret; any change to one of them, or a late
use, fails the check. Only the holder of a valid API key gets such a URL (by a 307).
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from datetime import datetime, timedelta
from urllib.parse import quote

TTL = timedelta(minutes=5)


def download_path(workspace_id: str, email_id: str, filename: str) -> str:
    """The path an attachment is downloaded from (its name percent-encoded)."""
    name = quote(filename, safe="")
    return f"/v1/{workspace_id}/email/{email_id}/attachment/{name}/download"


def _signature(secret: bytes, workspace_id: str, email_id: str, filename: str, expires: int) -> str:
    name = unicodedata.normalize("NFC", filename)
    signed = "\n".join(("download", workspace_id, email_id, name, str(expires)))
    return hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()


def signed_url(
    secret: bytes, workspace_id: str, email_id: str, filename: str, now: datetime
) -> str:
    """The attachment's download URL, valid for five minutes from `now`."""
    expires = int((now + TTL).timestamp())
    signature = _signature(secret, workspace_id, email_id, filename, expires)
    path = download_path(workspace_id, email_id, filename)
    return f"{path}?expires={expires}&signature={signature}"


def check_signature(
    secret: bytes,
    workspace_id: str,
    email_id: str,
    filename: str,
    *,
    expires: str,
    signature: str,
    now: datetime,
) -> bool:
    """Whether the URL's signature holds and it has not expired."""
    if not expires.isdigit() or int(expires) < now.timestamp():
        return False
    expected = _signature(secret, workspace_id, email_id, filename, int(expires))
    return hmac.compare_digest(expected, signature)


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact one as RFC 6266 filename*."""
    fallback = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = "".join(c if c.isprintable() and c not in '"\\%' else "_" for c in fallback)
    fallback = fallback.strip() or "attachment"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
