"""Rule files are validated at start-up: anything wrong stops the service with a message naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.catalog import load_catalog
from cds_service.registry import RuleFileError
from tests.support import ROOT


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", target)
    return target


def edit_rule(rules: Path, relative: str, change) -> None:  # type: ignore[no-untyped-def]
    path = rules / relative
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_shipped_rules_load(rules: Path) -> None:
    catalog = load_catalog(rules)
    assert catalog.rules[0].id == "HW"
    pathways = {r.id for r in catalog.rules}
    for required in (
        "RF-CES",
        "RF-PROG",
        "RF-SBP",
        "RF-TRAUMA",
        "RF-INF",
        "RF-WL",
        "RF-CA",
        "RF-AC",
        "N-RAD",
        "N-DISC",
        "N-STEN",
        "N-FEM",
        "N-PLEX",
        "N-GLUT-RAD",
        "N-GLUT-SURG",
        "H-OA",
        "H-SUSP",
        "H-FAI",
        "H-LAB",
        "M-STR-12",
        "M-STR-3",
        "M-TB",
        "M-IPS",
        "M-DIS",
        "M-GLUT",
        "M-CORE",
        "M-ER",
    ):
        assert required in pathways


def test_every_rule_has_evidence_version_and_card_text(rules: Path) -> None:
    for rule in load_catalog(rules).rules:
        spec = rule.spec
        assert spec.evidence and spec.version and spec.card.reason and spec.logic, spec.id
        if spec.pathway not in ("entry",):
            assert spec.recommends, spec.id


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["when"]["any"][0].update(fact="no_such_fact"), "unknown fact 'no_such_fact'"),
        (lambda d: d["when"]["any"][0].update(valueset="no-such-set"), "unknown value set 'no-such-set'"),
        (lambda d: d["when"]["any"][0].update(within_days="soon"), "within_days"),
        (lambda d: d["when"]["any"][0].update(colour="red"), "colour"),
        (lambda d: d.update(recommends=["acupuncture"]), "recommends"),
        (lambda d: d.update(version="1.0"), "version"),
        (lambda d: d.pop("evidence"), "evidence"),
    ],
)
def test_invalid_rule_file_refuses_to_load(rules: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    edit_rule(rules, "pathways/red-flags/rf-ces.yaml", change)
    with pytest.raises(RuleFileError, match=r"rf-ces\.yaml") as excinfo:
        load_catalog(rules)
    assert message in str(excinfo.value)


def test_unknown_operator_refuses_to_load(rules: Path) -> None:
    edit_rule(rules, "pathways/red-flags/rf-sbp.yaml", lambda d: d["when"]["all"][0].update(op="~="))
    with pytest.raises(RuleFileError, match="needs op"):
        load_catalog(rules)


def test_an_order_standing_for_an_unknown_value_set_refuses_to_load(rules: Path) -> None:
    edit_rule(
        rules,
        "pathways/red-flags/rf-ces.yaml",
        lambda d: d["orders"][0].update(drafted_as="no-such-valueset"),
    )
    with pytest.raises(RuleFileError, match="rule RF-CES: order mri-lumbar-emergency drafted_as: unknown"):
        load_catalog(rules)


def test_unknown_code_system_refuses_to_load(rules: Path) -> None:
    path = rules / "valuesets" / "fai.yaml"
    data = yaml.safe_load(path.read_text())
    data["codes"].append({"system": "http://example.org/unknown-system", "code": "x"})
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RuleFileError, match="unknown code system"):
        load_catalog(rules)


def test_prefix_on_a_system_without_hierarchy_refuses_to_load(rules: Path) -> None:
    path = rules / "valuesets" / "fai.yaml"
    data = yaml.safe_load(path.read_text())
    data["codes"].append({"system": "sct", "prefix": "1234"})
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RuleFileError, match="prefix"):
        load_catalog(rules)


def test_dependency_cycle_refuses_to_load(rules: Path) -> None:
    edit_rule(
        rules,
        "pathways/muscular/m-glut.yaml",
        lambda d: d["when"]["all"].append({"fact": "rule", "rules": ["M-CORE"]}),
    )
    edit_rule(
        rules,
        "pathways/muscular/m-core.yaml",
        lambda d: d.update(when={"all": [d["when"], {"fact": "rule", "rules": ["M-GLUT"]}]}),
    )
    with pytest.raises(RuleFileError, match="cycle"):
        load_catalog(rules)


def test_broken_yaml_refuses_to_load(rules: Path) -> None:
    (rules / "pathways" / "hip" / "h-oa.yaml").write_text("id: H-OA\nwhen: [unclosed\n")
    with pytest.raises(RuleFileError, match=r"h-oa\.yaml: not valid YAML"):
        load_catalog(rules)


def test_site_codes_extend_a_value_set_without_editing_shipped_files(rules: Path, tmp_path: Path) -> None:
    extra = tmp_path / "site"
    extra.mkdir()
    (extra / "flowsheets.yaml").write_text(
        yaml.safe_dump(
            {
                "extends": "unable-to-bear-weight",
                "note": "local flowsheet row",
                "codes": [{"system": "http://hospital.example.org/flowsheet", "code": "FS-1234"}],
            }
        )
    )
    with pytest.raises(RuleFileError, match="unknown code system"):
        load_catalog(rules, extra)  # a site system must be declared: in the site file itself
    (extra / "flowsheets.yaml").write_text(
        yaml.safe_dump(
            {
                "extends": "unable-to-bear-weight",
                "note": "local flowsheet row",
                "systems": {
                    "hospital": {"uri": "http://hospital.example.org/flowsheet", "label": "Flowsheet"}
                },
                "codes": [{"system": "hospital", "code": "FS-1234"}],
            }
        )
    )
    shipped = (rules / "code-systems.yaml").read_text()
    catalog = load_catalog(rules, extra)
    assert (rules / "code-systems.yaml").read_text() == shipped
    match = catalog.engine.terminology.match("http://hospital.example.org/flowsheet", "FS-1234")
    assert "unable-to-bear-weight" in match.valuesets


def test_site_file_for_an_unknown_value_set_refuses_to_load(rules: Path, tmp_path: Path) -> None:
    extra = tmp_path / "site"
    extra.mkdir()
    (extra / "x.yaml").write_text(
        yaml.safe_dump({"extends": "nope", "codes": [{"system": "sct", "code": "1"}]})
    )
    with pytest.raises(RuleFileError, match="extends unknown value set 'nope'"):
        load_catalog(rules, extra)


def test_rules_version_changes_when_a_rule_file_changes(rules: Path) -> None:
    before = load_catalog(rules).version
    edit_rule(rules, "pathways/hip/h-oa.yaml", lambda d: d.update(version="1.0.1"))
    assert load_catalog(rules).version != before
