"""The two subcommands' arguments: required ones, the token from the environment, ``--only`` lists."""

from __future__ import annotations

import pytest

from cds_service import cli
from cds_service.tools.load_fixtures import parse_only


def test_check_needs_a_server_and_a_patient(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["check", "--fhir-server", "http://x/fhir"])
    assert exit_info.value.code == 2
    assert "--patient" in capsys.readouterr().err


def test_the_token_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FHIR_ACCESS_TOKEN", "from-env")
    args = cli.build_parser().parse_args(["check", "--fhir-server", "http://x/fhir", "--patient", "p"])
    assert args.token == "from-env"
    assert args.prefetch is True and args.hook == "patient-view" and args.service_url is None
    args = cli.build_parser().parse_args(["load-fixtures", "--fhir-server", "http://x/fhir", "--token", "t"])
    assert args.token == "t"


def test_a_bad_date_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["load-fixtures", "--fhir-server", "http://x/fhir", "--today", "15/01/2026"])
    assert "not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_only_accepts_lists_and_repeats() -> None:
    assert parse_only(["V01,V33", " barney ", ""]) == ("V01", "V33", "barney")
    assert parse_only(None) == ()
