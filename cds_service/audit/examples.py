"""Response examples for /docs: a real call (vignette V01 under the patient id ``12345``) and the feedback
on its card, trimmed to one rule that fired, one that did not and two categories. The patient hash is the
HMAC-SHA256 of ``12345`` with the key ``docs-example-key``."""

from __future__ import annotations

from typing import Any

#: the two bladder/saddle Conditions of V01, as the trace shows them under the rule and under its leaf
CES_FACTS: list[dict[str, Any]] = [
    {
        "resourceType": "Condition",
        "id": "res-con-3",
        "system": "http://snomed.info/sct",
        "code": "267064002",
        "date": "2026-01-14",
        "dateSource": "onset",
        "valuesets": ["ces-sphincter-saddle"],
    },
    {
        "resourceType": "Condition",
        "id": "res-con-4",
        "system": "http://snomed.info/sct",
        "code": "449813001",
        "date": "2026-01-14",
        "dateSource": "onset",
        "valuesets": ["ces-sphincter-saddle"],
    },
]

SUMMARY_EXAMPLE: dict[str, Any] = {
    "id": "72eb7d35-4f74-44a6-bc16-bafaad23406b",
    "hook_instance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "service_id": "hip-weakness",
    "hook": "patient-view",
    "started_at": "2026-01-15T12:00:00Z",
    "duration_ms": 11.594,
    "client_iss": "https://ehr.example.org/fhir",
    "client_tenant": "hospital-a",
    "patient_hash": "6b73a7dacfd214cc87c5757ee41a8e886059e5312e89b512334b0c39295187ed",
    "rules_version": "afbbb7d56a1b",
    "hip_weakness": True,
    "red_flag": True,
    "card_count": 1,
    "highest_indicator": "critical",
    "fired_rules": ["HW", "RF-CES"],
    "categories": ["urgent-referral"],
}

PAGE_EXAMPLE: dict[str, Any] = {"items": [SUMMARY_EXAMPLE], "next_offset": None}

DETAIL_EXAMPLE: dict[str, Any] = {
    **SUMMARY_EXAMPLE,
    "prefetch": {
        "patient": "supplied",
        "conditions": "supplied",
        "observations": "supplied",
        "medicationRequests": "supplied",
        "medicationStatements": "supplied",
    },
    "unreadable_count": 0,
    "recorded_at": "2026-01-15T12:00:00.412Z",
    "trace": {
        "today": "2026-01-15",
        "rules_version": "afbbb7d56a1b",
        "hip_weakness": True,
        "weakness_onset": "2026-01-14",
        "red_flag": True,
        "categories": {"urgent-referral": ["RF-CES"]},
        "suppressed": [],
        "rules": [
            {
                "id": "RF-CES",
                "version": "1.0.0",
                "pathway": "red-flag",
                "fired": True,
                "matched": True,
                "recommends": ["urgent-referral"],
                "facts": [
                    *CES_FACTS,
                    {
                        "resourceType": "Condition",
                        "id": "res-con-2",
                        "system": "http://snomed.info/sct",
                        "code": "127378008",
                        "date": "2026-01-14",
                        "dateSource": "onset",
                        "valuesets": ["bilateral-leg-weakness", "hip-weakness-finding"],
                    },
                    {
                        "resourceType": "Observation",
                        "id": "res-obs-5",
                        "system": "http://example.org/fhir/CodeSystem/hip-weakness-cds-local",
                        "code": "hip-flexion-mrc",
                        "date": "2026-01-15",
                        "dateSource": "effective",
                        "valuesets": ["hip-flexion-mrc"],
                        "value": 3.0,
                    },
                    {
                        "resourceType": "Observation",
                        "id": "res-obs-6",
                        "system": "http://example.org/fhir/CodeSystem/hip-weakness-cds-local",
                        "code": "hip-flexion-mrc",
                        "date": "2026-01-15",
                        "dateSource": "effective",
                        "valuesets": ["hip-flexion-mrc"],
                        "value": 3.0,
                    },
                ],
                "leaves": [
                    {
                        "label": "New bladder, bowel or saddle symptom",
                        "fact": "finding",
                        "params": {
                            "valueset": "ces-sphincter-saddle",
                            "within_days": 14,
                            "relative_to_weakness": {"from_days": -14},
                            "combine": "any",
                        },
                        "passed": True,
                        "value": True,
                        "facts": CES_FACTS,
                    },
                    {
                        "label": "Cauda equina syndrome or cord compression diagnosis",
                        "fact": "finding",
                        "params": {"valueset": "ces-diagnosis"},
                        "passed": False,
                        "value": False,
                        "facts": [],
                    },
                ],
            },
            {
                "id": "H-FAI",
                "version": "1.0.0",
                "pathway": "hip",
                "fired": False,
                "matched": False,
                "recommends": ["hip-imaging", "orthopedic-referral"],
                "facts": [],
                "leaves": [
                    {
                        "label": "Femoroacetabular impingement",
                        "fact": "finding",
                        "params": {"valueset": "fai"},
                        "passed": False,
                        "value": False,
                        "facts": [],
                    }
                ],
            },
        ],
        "unreadable": [],
        "notes": [],
        "other_patient_resources": 0,
    },
    "cards": [
        {
            "position": 0,
            "uuid": "9a2c1f5e-7d0b-4c2e-8f43-1b6d9e0a7c35",
            "category": "urgent-referral",
            "indicator": "critical",
            "summary": "Red flag with hip weakness (possible cauda equina syndrome): same-day "
            "emergency assessment",
            "rule_ids": ["RF-CES"],
            "suggestion_ids": [
                "4e0a3a1e-3283-4575-ab82-028d55fe2719",
                "e56e1945-20b3-4393-8503-a1a20fd73152",
            ],
            "feedback": [
                {
                    "outcome": "overridden",
                    "outcome_at": "2026-01-15T12:03:10Z",
                    "received_at": "2026-01-15T12:03:11.208Z",
                    "card": "9a2c1f5e-7d0b-4c2e-8f43-1b6d9e0a7c35",
                    "accepted_suggestions": [],
                    "reasons": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                            "code": "cds-not-applicable",
                            "display": "Does not apply to this patient (e.g. already assessed or arranged)",
                        }
                    ],
                    "has_comment": True,
                    "client_iss": "https://ehr.example.org/fhir",
                }
            ],
        }
    ],
    "other_calls": [],
}

STATS_EXAMPLE: dict[str, Any] = {
    "since": None,
    "until": None,
    "service": None,
    "invocations": 1,
    "rules": [
        {
            "rule_id": "H-OA",
            "versions": [],
            "pathway": "hip",
            "fired": 0,
            "cards": 0,
            "accepted": 0,
            "overridden": 0,
            "with_comment": 0,
            "override_reasons": [],
        },
        {
            "rule_id": "RF-CES",
            "versions": ["1.0.0"],
            "pathway": "red-flag",
            "fired": 1,
            "cards": 1,
            "accepted": 0,
            "overridden": 1,
            "with_comment": 1,
            "override_reasons": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                    "code": "cds-not-applicable",
                    "display": "Does not apply to this patient (e.g. already assessed or arranged)",
                    "cards": 1,
                }
            ],
        },
    ],
    "categories": [
        {
            "category": "urgent-referral",
            "cards": 1,
            "indicators": {"critical": 1},
            "accepted": 0,
            "overridden": 1,
            "with_comment": 1,
            "override_reasons": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
                    "code": "cds-not-applicable",
                    "display": "Does not apply to this patient (e.g. already assessed or arranged)",
                    "cards": 1,
                }
            ],
        },
        {
            "category": "mri-lumbar-spine",
            "cards": 0,
            "indicators": {},
            "accepted": 0,
            "overridden": 0,
            "with_comment": 0,
            "override_reasons": [],
        },
    ],
    "feedback_without_card": 0,
    "feedback_unmatched": 0,
}
