"""Cards in the terminal: every part a clinician needs, plain text unless writing to a terminal."""

from __future__ import annotations

import io
from typing import Any

from cds_service.tools.cards_view import render
from cds_service.tools.console import Console

CARD: dict[str, Any] = {
    "summary": "Hip weakness with hip osteoarthritis: physiotherapy referral advised",
    "indicator": "info",
    "detail": "**Why**\n- **Hip osteoarthritis**: exercise.\n"
    "  - Osteoarthritis, left hip (Condition ICD-10-CM M16.12; onset 2024-01-16)\n\n"
    "**What to do**\n- Exercise-based physiotherapy.\n\n"
    "_Rules: H-OA v1.0.0. Decision support only._",
    "source": {
        "label": "NICE NG226",
        "url": "https://www.nice.org.uk/guidance/ng226",
        "topic": {"system": "x", "code": "physiotherapy", "display": "Physiotherapy"},
    },
    "suggestions": [
        {
            "label": "Refer to physiotherapy",
            "uuid": "u1",
            "isRecommended": True,
            "actions": [
                {
                    "type": "create",
                    "description": "Refer",
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "code": {
                            "coding": [
                                {"system": "s", "code": "306170007", "display": "Referral to physiotherapy"}
                            ]
                        },
                    },
                }
            ],
        }
    ],
    "links": [{"label": "Rule H-OA", "url": "http://localhost:8080/rules/H-OA", "type": "absolute"}],
}


def plain() -> Console:
    return Console(io.StringIO(), io.StringIO())


def test_a_card_lists_indicator_findings_suggestions_source_rules_and_links() -> None:
    lines = render({"cards": [CARD]}, plain(), title="Patient/p1, hip-weakness (patient-view)")
    assert lines == [
        "Patient/p1, hip-weakness (patient-view): 1 card",
        "",
        "INFO     Hip weakness with hip osteoarthritis: physiotherapy referral advised",
        "  category    physiotherapy (Physiotherapy)",
        "  findings    - Hip osteoarthritis: exercise.",
        "                - Osteoarthritis, left hip (Condition ICD-10-CM M16.12; onset 2024-01-16)",
        "  what to do  - Exercise-based physiotherapy.",
        "  suggestions [ ] Refer to physiotherapy (recommended): "
        "create ServiceRequest 306170007 Referral to physiotherapy",
        "  source      NICE NG226 <https://www.nice.org.uk/guidance/ng226>",
        "  rules       H-OA v1.0.0. Decision support only.",
        "  links       Rule H-OA <http://localhost:8080/rules/H-OA>",
    ]


def test_no_cards_says_so() -> None:
    assert render({"cards": []}, plain(), title="Patient/p1, hip-weakness (patient-view)") == [
        "Patient/p1, hip-weakness (patient-view): no cards."
    ]


def test_colour_only_when_asked_for() -> None:
    coloured = render(
        {"cards": [{**CARD, "indicator": "critical"}]},
        Console(io.StringIO(), io.StringIO(), color=True),
        title="t",
    )
    assert "\x1b[31;1mCRITICAL" in coloured[2]
    assert "\x1b[1mHip osteoarthritis\x1b[0m" in coloured[4]
    assert not any("\x1b[" in line for line in render({"cards": [CARD]}, plain(), title="t"))


def test_no_color_environment_wins_over_a_terminal(monkeypatch: Any) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert Console(Tty(), Tty()).color_out
    monkeypatch.setenv("NO_COLOR", "1")
    assert not Console(Tty(), Tty()).color_out
