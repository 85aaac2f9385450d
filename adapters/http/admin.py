"""Admin resources (Workspace.admin): setups, use cases, keys, inbound endpoints.

Every answer is built from a response model, so what leaves the service is exactly what
the model names: never a DKIM private key, an SMTP password, an API key's hash or an
inbound endpoint's secret. One module per resource.
"""

from __future__ import annotations

from adapters.http.admin_common import Permission
from adapters.http.api import Operation
from adapters.http.inbound import inbound_operations
from adapters.http.keys import keys_operations
from adapters.http.setups import setups_operations
from adapters.http.use_cases import mask_transport, use_cases_operations

__all__ = ["Permission", "admin_operations", "mask_transport"]


def admin_operations() -> list[Operation]:
    """Every admin endpoint."""
    return [
        *setups_operations(),
        *use_cases_operations(),
        *keys_operations(),
        *inbound_operations(),
    ]
