"""Authentication of CDS clients (EHRs) by the signed JWT CDS Hooks 2.0 requires on every call.

The HTTP layer builds one ``ClientAuthenticator`` from
``load_trusted_clients(settings.trusted_clients_file)``, the shared ``httpx.AsyncClient`` and a
``ReplayCache``, calls ``authenticate(header, endpoint_url)`` and answers 401 on ``AuthenticationFailed``,
with its ``description`` in ``WWW-Authenticate`` (``security.failures``).
"""

from cds_service.security.clients import TrustedClient, load_trusted_clients
from cds_service.security.failures import AuthenticationFailed, www_authenticate
from cds_service.security.jwt_auth import ClientAuthenticator, ClientIdentity
from cds_service.security.replay import MemoryReplayCache, ReplayCache

__all__ = [
    "AuthenticationFailed",
    "ClientAuthenticator",
    "ClientIdentity",
    "MemoryReplayCache",
    "ReplayCache",
    "TrustedClient",
    "load_trusted_clients",
    "www_authenticate",
]
