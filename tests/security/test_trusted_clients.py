"""The trusted clients file: valid files load, mistakes are refused with the file and entry named."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cds_service.security import TrustedClient, load_trusted_clients

from .helpers import JWKS_URL, KEYS_DIR, KeyRing

SANDBOX_ISS = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "trusted-clients.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_sandbox_profile_loads(tmp_path: Path) -> None:
    """The public CDS Hooks sandbox: ES384, keys pinned from its repository, its jku allow-listed."""
    sandbox_jwks = json.loads((KEYS_DIR / "sandbox-jwks.json").read_text())
    path = write(tmp_path, [{"iss": SANDBOX_ISS, "jwks": sandbox_jwks, "jku_allowed": [SANDBOX_JKU]}])

    [client] = load_trusted_clients(path)

    assert client.iss == SANDBOX_ISS
    assert client.jku_allowed == (SANDBOX_JKU,)
    assert list(client.inline_keys) == [SANDBOX_KID]
    assert client.inline_keys[SANDBOX_KID].alg == "ES384"


def test_full_entry_and_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {
                "iss": "https://epic.example.org/api/FHIR/R4",
                "jwks_url": JWKS_URL,
                "jku_allowed": [JWKS_URL],
                "tenants": ["org-1"],
                "algorithms": ["RS384"],
                "audiences": ["https://cds.example.org/epic"],
                "fhir_servers": ["https://epic.example.org/api/FHIR/R4/"],
            },
            {"iss": "https://other.example.org", "jwks_url": "http://localhost:8081/jwks"},
        ],
    )
    epic, local = load_trusted_clients(path)

    assert (epic.tenants, epic.algorithms, epic.audiences) == (
        ("org-1",),
        ("RS384",),
        ("https://cds.example.org/epic",),
    )
    assert (local.tenants, local.algorithms, local.jku_allowed, local.fhir_servers) == (
        None,
        ("ES384", "RS384"),
        (),
        (),
    )
    assert local.inline_keys == {}


@pytest.fixture
def jwks(keys: KeyRing) -> dict[str, Any]:
    return KeyRing.jwks(keys.ec1)


BAD_ENTRIES: dict[str, tuple[dict[str, Any], str]] = {
    "no key source": ({"iss": "https://a.org"}, "exactly one of jwks / jwks_url"),
    "both key sources": ({"iss": "https://a.org", "jwks": "JWKS", "jwks_url": JWKS_URL}, "exactly one"),
    "HMAC algorithm": ({"iss": "https://a.org", "jwks": "JWKS", "algorithms": ["HS256"]}, "algorithms.0"),
    "alg none": ({"iss": "https://a.org", "jwks": "JWKS", "algorithms": ["none"]}, "algorithms.0"),
    "no algorithm": ({"iss": "https://a.org", "jwks": "JWKS", "algorithms": []}, "algorithms"),
    "empty iss": ({"iss": "", "jwks": "JWKS"}, "iss"),
    "misspelt member": ({"iss": "https://a.org", "jwks": "JWKS", "tennants": ["x"]}, "tennants"),
    "plain http key URL": (
        {"iss": "https://a.org", "jwks_url": "http://keys.a.org/jwks"},
        "not an https URL",
    ),
    "plain http jku": ({"iss": "https://a.org", "jwks": "JWKS", "jku_allowed": ["http://a.org/k"]}, "https"),
    "jwks not a key set": ({"iss": "https://a.org", "jwks": {"kty": "EC"}}, '"keys" list'),
    "no signature key": (
        {"iss": "https://a.org", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}},
        "no usable signature key",
    ),
}


@pytest.mark.parametrize(("entry", "message"), BAD_ENTRIES.values(), ids=BAD_ENTRIES.keys())
def test_bad_entry_is_refused_naming_file_and_entry(
    entry: dict[str, Any], message: str, jwks: dict[str, Any], tmp_path: Path
) -> None:
    entry = {name: jwks if value == "JWKS" else value for name, value in entry.items()}
    path = write(tmp_path, [{"iss": "https://fine.example.org", "jwks": jwks}, entry])

    with pytest.raises(ValueError) as failure:
        load_trusted_clients(path)

    assert str(path) in str(failure.value)
    assert f"entry 1 (iss={entry['iss']!r})" in str(failure.value)
    assert message in str(failure.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"iss": "https://a.org"}, "non-empty JSON list"),
        ([], "non-empty JSON list"),
        (["https://a.org"], "entry 0"),
    ],
)
def test_bad_file_is_refused(content: Any, message: str, tmp_path: Path) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as failure:
        load_trusted_clients(path)
    assert str(path) in str(failure.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_trusted_clients(tmp_path / "absent.json")


def test_duplicate_iss_is_refused(jwks: dict[str, Any], tmp_path: Path) -> None:
    path = write(
        tmp_path, [{"iss": "https://a.org", "jwks": jwks}, {"iss": "https://a.org", "jwks_url": JWKS_URL}]
    )
    with pytest.raises(ValueError, match=re.escape("duplicate iss 'https://a.org'")) as failure:
        load_trusted_clients(path)
    assert str(path) in str(failure.value)


def test_unusable_keys_in_a_pinned_set_are_skipped(keys: KeyRing) -> None:
    private_jwk = keys.rsa1.jwk | {"kid": "with-private-part", "d": "AQAB"}
    client = TrustedClient(
        iss="https://a.org",
        jwks={"keys": [keys.ec1.jwk, keys.ec2.jwk | {"use": "enc"}, {"kty": "EC"}, private_jwk, "junk"]},
    )
    assert list(client.inline_keys) == ["ec-1"]
