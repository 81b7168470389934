"""The corpus of hostile hook requests: every way the bytes an EHR sends can be wrong.

Each entry is the exact bytes sent, the Content-Type, the service called, and what must happen:

- ``Refused(status, expression)``: a clear 4xx with an OperationOutcome (naming the member when given);
- ``Flagged()``: 200 with the red flag card of the vignette, as if nothing were wrong;
- ``FlaggedOrNamed(refs)``: 200, and either the red flag card is still there, or the call's trace (the
  audit record) names each resource in ``refs`` as unreadable data that could hide a red flag (and the
  first card, if any, says so): never a silently missed red flag;
- ``SameAs(body)``: 200 with the same cards as another body (the documented reading of the input).

The entries are built from the vignettes whose red flag hangs on one resource: V03 (saddle numbness,
``Condition/hw-v03-con-2``), V09 (fever, ``Observation/hw-v09-obs-1``), V14 (apixaban,
``MedicationRequest/hw-v14-med-2``), and V01 (cauda equina, several findings).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.support import bundle_resources, hook_request, vignette_bundle

JSON = "application/json"
SADDLE = "Condition/hw-v03-con-2"
FEVER = "Observation/hw-v09-obs-1"
APIXABAN = "MedicationRequest/hw-v14-med-2"
MRC_V01 = ("Observation/hw-v01-obs-5", "Observation/hw-v01-obs-6")


@dataclass(frozen=True)
class Refused:
    status: int
    expression: str | None = None  # an issue's expression must start with this


@dataclass(frozen=True)
class Flagged:
    pass


@dataclass(frozen=True)
class FlaggedOrNamed:
    refs: tuple[str, ...]


@dataclass(frozen=True)
class SameAs:
    body: bytes


Expect = Refused | Flagged | FlaggedOrNamed | SameAs


@dataclass(frozen=True)
class Hostile:
    name: str
    body: bytes
    expect: Expect
    content_type: str | None = JSON
    service: str = "hip-weakness"
    headers: dict[str, str] = field(default_factory=dict)


def request(case: str = "V01") -> dict[str, Any]:
    return hook_request(bundle_resources(vignette_bundle(case)), f"hw-{case.lower()}")


def encode(body: Any) -> bytes:
    return orjson.dumps(body)


def resources_of(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for value in body["prefetch"].values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            for entry in value.get("entry", []):
                yield entry["resource"]


def mutated(case: str, ref: str, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The vignette's request with ``change`` applied to the resource ``ref`` (``Type/id``)."""
    body = request(case)
    rtype, rid = ref.split("/")
    for resource in resources_of(body):
        if resource["resourceType"] == rtype and resource["id"] == rid:
            change(resource)
            return encode(body)
    raise KeyError(ref)


def setting(member: str, value: Any, drop: tuple[str, ...] = ()) -> Callable[[dict[str, Any]], None]:
    def change(resource: dict[str, Any]) -> None:
        for name in drop:
            resource.pop(name, None)
        resource[member] = value

    return change


def envelope(path: tuple[str | int, ...], value: Any, case: str = "V01") -> bytes:
    body: Any = request(case)
    target = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return encode(body)


def without(path: tuple[str, ...], case: str = "V01") -> bytes:
    body: Any = request(case)
    target = body
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return encode(body)


def set_text_placeholder(resource: dict[str, Any]) -> None:
    resource["code"]["coding"][0]["display"] = "PLACEHOLDER"


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


def _corpus() -> Iterator[Hostile]:
    v01 = encode(request("V01"))
    v01_text = v01.decode()

    # -- malformed JSON ---------------------------------------------------------------------------------
    malformed = {
        "truncated": v01[: len(v01) // 2],
        "trailing comma": v01[:-1] + b",}",
        "single quotes": b"{'hook': 'patient-view'}",
        "unquoted member names": b"{hook: 1}",
        "comment": b'{"hook": "patient-view" // EHR note\n}',
        "NaN": v01.replace(b'"valueInteger":3', b'"valueInteger":NaN', 1),
        "Infinity": v01.replace(b'"valueInteger":3', b'"valueInteger":Infinity', 1),
        "number too large": v01.replace(b'"valueInteger":3', b'"valueInteger":1e400', 1),
        "invalid UTF-8": v01.replace(b"Acute low back pain", b"Acute \xff\xfe back pain", 1),
        "lone surrogate escape": v01.replace(b"Acute low back pain", b"\\ud800", 1),
        "raw control character in a string": v01.replace(b"Acute low back pain", b"Acute\x01pain", 1),
        "unterminated string": b'{"hook": "patient-view',
        "two documents": v01 + v01,
        "byte order mark": b"\xef\xbb\xbf" + v01,
        "UTF-16": v01_text.encode("utf-16"),
        "empty body": b"",
        "only whitespace": b" \n\t ",
        "nesting deeper than 1024": nested(2000).encode(),
    }
    for name, body in malformed.items():
        yield Hostile(f"malformed JSON: {name}", body, Refused(400))
    for name, body in {
        "null": b"null",
        "array": b"[]",
        "string": b'"hi"',
        "number": b"42",
        "true": b"true",
    }.items():
        yield Hostile(f"JSON that is not an object: {name}", body, Refused(400))

    # -- Content-Type ------------------------------------------------------------------------------------
    for media in (
        "text/plain",
        "application/xml",
        "application/fhir+xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/html; charset=utf-8",
    ):
        yield Hostile(f"Content-Type {media}", v01, Refused(415), content_type=media)
    for json_media in ("application/fhir+json", "application/json; charset=utf-8", "APPLICATION/JSON", None):
        yield Hostile(
            f"Content-Type {json_media or 'absent'} (JSON all the same)",
            v01,
            Flagged(),
            content_type=json_media,
        )

    # -- deep nesting within orjson's limit ------------------------------------------------------------
    for depth in (100, 1000):
        yield Hostile(
            f"context member nested {depth} deep",
            v01_text.replace('"context":{', f'"context":{{"deep":{nested(depth - 3)},', 1).encode(),
            Flagged(),
        )
        yield Hostile(
            f"extension nested {depth} deep",
            (v01_text[:-1] + f',"extension":{nested(depth - 2)}}}').encode(),
            Flagged(),
        )
        arrays = "[" * (depth - 8) + "]" * (depth - 8)
        yield Hostile(
            f"resource extension of arrays {depth} deep",
            v01_text.replace(
                '"resourceType":"Condition",', f'"resourceType":"Condition","extension":{arrays},', 1
            ).encode(),
            Flagged(),
        )

    # -- wrong types at every level of the envelope -------------------------------------------------------
    wrong: dict[str, list[Any]] = {
        "hook": [5, None, [], {}, True, "", "x" * 200],
        "hookInstance": [5, None, "", "has space", "nul\u0000byte", "x" * 200, "é"],
        "fhirServer": [
            5,
            [],
            "not a url",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "http://" + "a" * 3000,
        ],
        "fhirAuthorization": ["token", 5, [], {}, {"access_token": 5}, {"access_token": ""}],
        "context": [[], "x", 5, None, {}],
        "prefetch": [[], "x", 5, True],
        "extension": [[], "x", 5],
    }
    for member, values in wrong.items():
        for value in values:
            body = envelope((member,), value)
            if member == "fhirAuthorization":  # needs a fhirServer to be judged on its own shape
                body = envelope(("fhirServer",), "https://ehr.example.org/fhir")
                parsed = orjson.loads(body)
                parsed["fhirAuthorization"] = value
                body = encode(parsed)
            yield Hostile(f"{member} = {_short(value)}", body, Refused(400, member))
    for name, value in {
        "token_type MAC": {"access_token": "abc", "token_type": "MAC"},
        "expires_in negative": {"access_token": "abc", "token_type": "Bearer", "expires_in": -1},
        "expires_in text": {"access_token": "abc", "token_type": "Bearer", "expires_in": "soon"},
    }.items():
        parsed = request()
        parsed["fhirServer"] = "https://ehr.example.org/fhir"
        parsed["fhirAuthorization"] = value
        yield Hostile(f"fhirAuthorization {name}", encode(parsed), Refused(400, "fhirAuthorization"))
    parsed = request()
    parsed["fhirAuthorization"] = {"access_token": "abc", "token_type": "Bearer"}
    yield Hostile("fhirAuthorization without fhirServer", encode(parsed), Refused(400))
    for member in ("hook", "hookInstance", "context"):
        yield Hostile(f"no {member}", without((member,)), Refused(400, member))
    context_values: dict[str, list[Any]] = {
        "patientId": [5, [], {}, None, "", "a/b", "../etc/passwd", "x" * 65, "é", "hw-v01\n"],
        "userId": [5, "Practitioner", "Practitioner/", "/x", "Practitioner/a b"],
        "encounterId": [5, {}, "a/b"],
    }
    for member, values in context_values.items():
        for value in values:
            yield Hostile(
                f"context.{member} = {_short(value)}",
                envelope(("context", member), value),
                Refused(400, f"context.{member}"),
            )
    for member in ("patientId", "userId"):
        yield Hostile(f"no context.{member}", without(("context", member)), Refused(400, f"context.{member}"))

    # -- order hooks: their context ------------------------------------------------------------------------
    for name, context in {
        "draftOrders not a Bundle": {"draftOrders": {"resourceType": "Patient"}},
        "draftOrders a string": {"draftOrders": "orders"},
        "draftOrders.entry not an array": {"draftOrders": {"resourceType": "Bundle", "entry": 5}},
        "selections empty": {"draftOrders": {"resourceType": "Bundle", "entry": []}, "selections": []},
        "selections not references": {
            "draftOrders": {"resourceType": "Bundle", "entry": []},
            "selections": [5],
        },
    }.items():
        parsed = request()
        parsed["hook"] = "order-select"
        parsed["context"].update(context)
        yield Hostile(
            f"order-select {name}",
            encode(parsed),
            Refused(400, "context"),
            service="hip-weakness-order-select",
        )

    # -- prefetch values that are not FHIR --------------------------------------------------------------
    for value in (
        "hello",
        42,
        [],
        True,
        {},
        {"resourceType": 5},
        {"foo": "bar"},
        [{"resourceType": "Condition"}],
    ):
        yield Hostile(
            f"prefetch.conditions = {_short(value)}",
            envelope(("prefetch", "conditions"), value),
            Refused(400, "prefetch.conditions"),
        )
    for value in (5, "x", {"a": 1}):
        yield Hostile(
            f"Bundle.entry = {_short(value)}",
            envelope(("prefetch", "conditions", "entry"), value),
            Refused(400, "prefetch.conditions"),
        )
    for name, outcome in {
        "issue a number": {"resourceType": "OperationOutcome", "issue": 5},
        "details a string": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "details": "x"}],
        },
        "issue items numbers": {"resourceType": "OperationOutcome", "issue": [1, 2]},
    }.items():
        yield Hostile(  # the other keys still show the red flag: the card says this one is missing
            f"prefetch.observations: OperationOutcome with {name}",
            envelope(("prefetch", "observations"), outcome),
            Flagged(),
        )
    yield Hostile("unknown prefetch keys", envelope(("prefetch", "zzz"), {"anything": [1, 2]}), Flagged())

    # -- resources with wrong shapes inside valid Bundles ---------------------------------------------------
    junk_entries = [5, "x", None, [], {}, {"resource": 5}, {"resource": []}, {"resource": {"no": "type"}}]
    parsed = request()
    parsed["prefetch"]["conditions"]["entry"] = junk_entries + parsed["prefetch"]["conditions"]["entry"]
    yield Hostile("junk Bundle entries beside the real ones", encode(parsed), Flagged())
    for value in (5, "next", [5], [{"relation": "next", "url": 5}], {"relation": "next"}):
        yield Hostile(
            f"Bundle.link = {_short(value)}",
            envelope(("prefetch", "conditions", "link"), value),
            Flagged(),  # a next link without a URL is no next link: the page is all there is
        )
    shapes: dict[str, Callable[[dict[str, Any]], None]] = {
        "code a string": setting("code", "449813001"),
        "code a number": setting("code", 449813001),
        "code.coding an object": setting(
            "code", {"coding": {"system": "http://snomed.info/sct", "code": "449813001"}}
        ),
        "code.coding items strings": setting("code", {"coding": ["449813001"]}),
        "coding.code a number": setting(
            "code", {"coding": [{"system": "http://snomed.info/sct", "code": 449813001}]}
        ),
        "coding.system a number": setting("code", {"coding": [{"system": 5, "code": "449813001"}]}),
        "code without coding, text only": setting("code", {"text": "saddle numbness"}),
        "clinicalStatus a string": setting("clinicalStatus", "active"),
        "clinicalStatus unknown code": setting("clinicalStatus", {"coding": [{"code": "zzz"}]}),
        "verificationStatus a list": setting("verificationStatus", []),
        "subject a string": setting("subject", "Patient/hw-v03"),
        "subject reference a number": setting("subject", {"reference": 5}),
        "id a number": setting("id", 5),
        "resourceType lowercase": setting("resourceType", "condition"),
        "meta a string": setting("meta", "x"),
        "onsetPeriod a string": setting("onsetPeriod", "x", drop=("onsetDateTime",)),
        "onsetPeriod start after end": setting(
            "onsetPeriod", {"start": "2026-01-14", "end": "2026-01-01"}, drop=("onsetDateTime",)
        ),
        "onsetAge huge": setting("onsetAge", {"value": 1e300}, drop=("onsetDateTime",)),
        "onsetAge negative": setting("onsetAge", {"value": -1e300}, drop=("onsetDateTime",)),
        "onsetAge text": setting("onsetAge", {"value": "forty"}, drop=("onsetDateTime",)),
        "onsetString only": setting("onsetString", "last week", drop=("onsetDateTime",)),
    }
    for name, change in shapes.items():
        refs = ("condition/hw-v03-con-2",) if name == "resourceType lowercase" else (SADDLE,)
        yield Hostile(
            f"saddle-numbness Condition: {name}", mutated("V03", SADDLE, change), FlaggedOrNamed(refs)
        )
    for name, change in {
        "no resourceType": lambda r: r.pop("resourceType"),
        "resourceType 5": setting("resourceType", 5),
    }.items():
        yield Hostile(
            f"saddle-numbness Condition: {name}",
            mutated("V03", SADDLE, change),
            FlaggedOrNamed(("Resource/hw-v03-con-2",)),
        )
    yield Hostile(
        "10,000 junk entries",
        envelope(
            ("prefetch", "observations", "entry"), [{"resource": {"resourceType": "Observation"}}] * 10_000
        ),
        FlaggedOrNamed(()),
    )

    # -- dates in every odd form -----------------------------------------------------------------------------
    dates: list[Any] = [
        "2026-01-12T25:00:00Z",
        "2026-13-01",
        "2026-02-30",
        "2026",
        "2026-01",
        "12/01/2026",
        "2026-01-12T10:00:00",
        "2026-01-12T10:00:00+14:00",
        "2026-01-12T10:00:00-25:00",
        "+002026-01-12",
        "",
        " 2026-01-12 ",
        "2026-01-12T10:00:00.123456789Z",
        "2026-06-30T23:59:60Z",
        "2026-W03",
        "２０２６-01-12",
        "9999-12-31",
        "9999-12-31T23:00:00-02:00",
        "0001-01-01",
        "0001-01-01T00:00:00+01:00",
        "0000-01-01",
        "10000-01-01",
        "yesterday",
        20260112,
        1e308,
        True,
        None,
        {"date": "2026-01-12"},
        ["2026-01-12"],
    ]
    for value in dates:
        yield Hostile(
            f"onsetDateTime {_short(value)}",
            mutated("V03", SADDLE, setting("onsetDateTime", value)),
            FlaggedOrNamed((SADDLE,)),
        )
    for value in ("2026-13-01", "0001-01-01T00:00:00+01:00", 5, "x"):
        yield Hostile(
            f"V09 temperature effectiveDateTime {_short(value)}",
            mutated("V09", FEVER, setting("effectiveDateTime", value)),
            FlaggedOrNamed((FEVER,)),
        )
    for value in ("0001-01-01T00:00:00+01:00", "2026-13-01", 5):
        yield Hostile(
            f"apixaban authoredOn {_short(value)}",
            mutated("V14", APIXABAN, setting("authoredOn", value)),
            FlaggedOrNamed((APIXABAN,)),
        )
    parsed = request("V03")
    parsed["prefetch"]["patient"]["birthDate"] = "0001-01-01T00:00:00+01:00"
    yield Hostile("Patient.birthDate past the calendar", encode(parsed), Flagged())

    # -- quantities in every odd form ----------------------------------------------------------------------
    ucum = "http://unitsofmeasure.org"
    quantities: list[Any] = [
        {"value": "38.6", "unit": "Cel", "system": ucum, "code": "Cel"},
        {"value": "38,6", "system": ucum, "code": "Cel"},
        {"value": 38.6},
        {"value": 38.6, "unit": "°C"},
        {"value": 38.6, "unit": "degrees", "system": ucum, "code": "cel"},
        {"value": 38.6, "system": ucum, "code": 5},
        {"value": 38.6, "system": 5, "code": "Cel"},
        {"value": 386, "system": ucum, "code": "dCel"},
        {"value": 1e308, "system": ucum, "code": "[degF]"},
        {"value": -1e308, "system": ucum, "code": "K"},
        {"value": -0.0, "system": ucum, "code": "Cel"},
        {"value": 0, "system": ucum, "code": "K"},
        {"value": True, "system": ucum, "code": "Cel"},
        {"value": None, "system": ucum, "code": "Cel"},
        {"value": [38.6], "system": ucum, "code": "Cel"},
        {"value": 38.6, "comparator": ">", "system": ucum, "code": "Cel"},
        {"value": 38.6, "comparator": 5, "system": ucum, "code": "Cel"},
        [38.6],
        "38.6 Cel",
    ]
    for value in quantities:
        yield Hostile(
            f"temperature valueQuantity {_short(value)}",
            mutated("V09", FEVER, setting("valueQuantity", value)),
            FlaggedOrNamed((FEVER,)),
        )
    alternatives: dict[str, dict[str, Any]] = {
        "valueString": {"valueString": "38.6 C"},
        "valueInteger": {"valueInteger": 39},
        "valueCodeableConcept a string": {"valueCodeableConcept": "fever"},
        "two value[x]": {"valueString": "39", "valueInteger": 39},
        "component only": {"component": [{"valueQuantity": {"value": 38.6, "code": "Cel"}}]},
    }
    for name, members in alternatives.items():

        def change(resource: dict[str, Any], members: dict[str, Any] = members) -> None:
            resource.pop("valueQuantity")
            resource.update(members)

        yield Hostile(f"temperature {name}", mutated("V09", FEVER, change), FlaggedOrNamed((FEVER,)))
    for value in ("3", 3.5, -1, 99, 1e30, True, None, {"value": 3}):
        yield Hostile(
            f"MRC grade valueInteger {_short(value)}",
            mutated("V01", MRC_V01[0], setting("valueInteger", value)),
            FlaggedOrNamed((MRC_V01[0],)),
        )
    for name, change in {
        "medicationReference a string": setting(
            "medicationReference", "Medication/x", drop=("medicationCodeableConcept",)
        ),
        "medicationReference to nothing": setting(
            "medicationReference", {"reference": "Medication/missing"}, drop=("medicationCodeableConcept",)
        ),
        "medicationCodeableConcept a string": setting("medicationCodeableConcept", "apixaban"),
        "status a number": setting("status", 5),
        "dispenseRequest a string": setting("dispenseRequest", "x"),
    }.items():
        yield Hostile(
            f"apixaban MedicationRequest: {name}",
            mutated("V14", APIXABAN, change),
            FlaggedOrNamed((APIXABAN,)),
        )

    # -- unicode and control characters in strings ------------------------------------------------------
    texts = {
        "NUL": "saddle\u0000numbness",
        "all C0 controls": "".join(chr(c) for c in range(32)),
        "DEL and C1 controls": "\x7f\x80\x9f",
        "right-to-left override": "\u202enoitnetni",
        "zero-width joiners": "sad\u200ddle\u200b",
        "emoji": "\U0001f600" * 50,
        "markdown and HTML": "**urgent** <script>alert(1)</script> [x](javascript:alert(1)) | # _",
        "byte order mark": "\ufeffsaddle",
        "non-characters": "\ufffe\uffff",
        "astral plane": "\U0010fffd",
        "100,000 characters": "x" * 100_000,
    }
    for name, text in texts.items():

        def set_text(resource: dict[str, Any], text: str = text) -> None:
            resource["code"]["coding"][0]["display"] = text
            resource["code"]["text"] = text
            resource["note"] = [{"text": text}]

        yield Hostile(f"display and notes: {name}", mutated("V03", SADDLE, set_text), Flagged())
    yield Hostile(
        "display as an escaped surrogate pair",
        mutated("V03", SADDLE, set_text_placeholder).replace(b"PLACEHOLDER", b"\\ud83d\\ude00"),
        Flagged(),
    )
    yield Hostile(
        "unicode member names",
        v01_text.replace('"context":{', '"context":{' + json.dumps("\u202e\u0000é😀") + ":1,", 1).encode(),
        Flagged(),
    )

    # -- duplicated member names -----------------------------------------------------------------------
    parsed = request()
    first = encode(parsed)
    yield Hostile(
        "two prefetch members (the second empty)",
        first[:-1] + b',"prefetch":{}}',
        Refused(400),
    )
    yield Hostile(
        "prefetch.conditions twice (the second null)",
        first[:-2] + b',"conditions":null}}',
        Refused(400),
    )
    entry_text = orjson.dumps(parsed["prefetch"]["conditions"]["entry"][2]["resource"]).decode()
    yield Hostile(
        "a Bundle entry with two resource members",
        v01_text.replace(
            '{"resource":' + entry_text,
            '{"resource":' + entry_text + ',"resource":{"resourceType":"Basic"}',
            1,
        ).encode(),
        Refused(400),
    )
    yield Hostile(
        "two prefetch members (the first empty): the data sent last is read",
        b'{"prefetch":{},' + first[1:],
        SameAs(first),
    )
    yield Hostile(
        "two patientId members: the last wins",
        v01_text.replace('"patientId":"hw-v01"', '"patientId":"other","patientId":"hw-v01"', 1).encode(),
        SameAs(first),
    )
    saddle = request("V03")
    saddle_text = encode(saddle).decode()
    benign_code = {"coding": [{"system": "http://snomed.info/sct", "code": "279039007"}]}
    benign = '"code":' + json.dumps(benign_code, separators=(",", ":"))
    yield Hostile(
        "two code members in a Condition (first benign): the last wins, as in FHIR servers",
        saddle_text.replace('"id":"hw-v03-con-2",', '"id":"hw-v03-con-2",' + benign + ",", 1).encode(),
        SameAs(encode(saddle)),
    )
    saddle_code = json.dumps(
        saddle["prefetch"]["conditions"]["entry"][1]["resource"]["code"], separators=(",", ":")
    )
    replaced = saddle_text.replace('"code":' + saddle_code, '"code":' + saddle_code + "," + benign, 1)
    assert replaced != saddle_text
    yield Hostile(
        "two code members in a Condition (last benign): the last wins (documented residual risk)",
        replaced.encode(),
        SameAs(mutated("V03", SADDLE, setting("code", benign_code))),
    )


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


CORPUS: list[Hostile] = list(_corpus())


def corpus_copy() -> list[Hostile]:
    return copy.deepcopy(CORPUS)
