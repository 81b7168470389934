"""Prefetch: what a service asks the EHR for, and how the answer is obtained.

- ``derive``: the queries, derived from what the rules read, for the deployment's EHR profile;
- ``templates``: filling template tokens, as an EHR does;
- ``supplied``: reading what the EHR sent; ``fetch``: fetching a key (fallbacks, paging);
- ``medications``: Medications behind references; ``resolve``: the whole ladder, within one budget.
"""

from cds_service.prefetch.fetch import FhirAccess, fhir_access
from cds_service.prefetch.resolve import KeyResult, PrefetchUnavailable, Resolved, resolve
from cds_service.prefetch.supplied import InvalidPrefetch
from cds_service.prefetch.templates import render

__all__ = [
    "FhirAccess",
    "InvalidPrefetch",
    "KeyResult",
    "PrefetchUnavailable",
    "Resolved",
    "fhir_access",
    "render",
    "resolve",
]
