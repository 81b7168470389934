"""Patient pseudonyms: HMAC-SHA256 of ``context.patientId`` keyed with ``CDS_PATIENT_HASH_SECRET``.

The audit store never holds a patient id. A keyed hash (not a plain hash: patient ids are short and
guessable, so an unkeyed hash could be reversed by trying them all) lets a reviewer who knows the id find
that patient's calls: the audit API hashes the id the reviewer types with the same key. Whoever holds the
key can test guesses, so it is a secret like the audit token, and rotating it breaks the link to older
records (documented in docs/audit.md).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets

from pydantic import SecretStr

logger = logging.getLogger(__name__)


class PatientPseudonym:
    """Turns a patient id into its stable pseudonym (64 hex characters)."""

    def __init__(self, secret: SecretStr | None) -> None:
        if secret is None:
            logger.warning(
                "CDS_PATIENT_HASH_SECRET is not set: using a random key for this process; patient "
                "pseudonyms in the audit trail will not match across restarts or workers"
            )
            self._key = secrets.token_bytes(32)
        else:
            self._key = secret.get_secret_value().encode()

    def __call__(self, patient_id: str) -> str:
        return hmac.new(self._key, patient_id.encode(), hashlib.sha256).hexdigest()
