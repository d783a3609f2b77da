"""Each role's meta/argument_specs.yml documents its defaults/main.yml, value for value.

The READMEs are generated from the specs (scripts/role-docs.py), so a spec default that drifted from
the role's real default would be published as the truth. Values are compared after YAML load (a
Jinja-templated default is a string on both sides and compares as one); an absent spec default means
null, as for Ansible.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import RequiredError

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(path.name for path in (ROOT / "roles").iterdir() if path.is_dir())


def spec_options(role: str) -> dict[str, dict]:
    """Every entry point's options, by name (an option documented twice must agree, checked below)."""
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options: dict[str, dict] = {}
    for entrypoint in specs["argument_specs"].values():
        options.update(entrypoint.get("options") or {})
    return options


def role_defaults(role: str) -> dict:
    path = ROOT / "roles" / role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def same(a: object, b: object) -> bool:
    """Equal in value and in type (YAML's `1` is not `true`, `1` is not `1.0`, `"22"` is not `22`)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def shared(role: str, name: str) -> bool:
    """A variable of the whole inventory (`localguard_engine_port`) that several roles read and
    document; no role owns it, so none sets it in its defaults (the issue: defined once)."""
    return name.startswith("localguard_") and not name.startswith(f"{role}_")


def validation_errors(options: dict[str, dict], params: dict) -> list[Exception]:
    """What Ansible's role argument validation reports (the preflight's PRE-01), missing required
    options left out: those are the inventory's to set."""
    result = ArgumentSpecValidator(options).validate(params, validate_role_argument_spec=True)
    return [error for error in result.errors.errors if not isinstance(error, RequiredError)]


def test_every_role_is_checked():
    assert {"baseline", "firewall", "pki", "gateway", "engine", "preflight"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_equal_role_defaults(role):
    defaults = role_defaults(role)
    wrong = []
    for name, option in spec_options(role).items():
        if "default" not in option or (shared(role, name) and name not in defaults):
            continue
        if name not in defaults:
            wrong.append(f"{name}: spec default {option['default']!r}, not in defaults/main.yml")
        elif not same(option["default"], defaults[name]):
            wrong.append(
                f"{name}: spec default {option['default']!r} != defaults/main.yml {defaults[name]!r}"
            )
    assert not wrong, f"roles/{role}: " + "; ".join(wrong)


@pytest.mark.parametrize("role", ROLES)
def test_every_role_default_is_documented_with_its_value(role):
    """A default the spec does not carry is one the README does not show. The one exception is a
    templated value of a type that cannot hold a string (`{{ x | default(6514) }}` for an int): as a
    spec default it would fail the preflight's validation on every host that does not set it (see
    the next test), so its description says what it defaults to."""
    options = spec_options(role)
    wrong = []
    for name, value in role_defaults(role).items():
        option = options.get(name)
        if option is None:
            wrong.append(f"{name}: in defaults/main.yml, not in meta/argument_specs.yml")
        elif value is None or "default" in option:
            continue  # compared by the test above; an absent spec default is null
        elif isinstance(value, str) and "{{" in value and validation_errors({name: option}, {name: value}):
            description = option.get("description") or []
            text = description if isinstance(description, str) else " ".join(description)
            if "default" not in text.lower():
                wrong.append(f"{name}: templated default {value!r} not described in its description")
        else:
            wrong.append(f"{name}: defaults/main.yml has {value!r}, the spec no default")
    assert not wrong, f"roles/{role}: " + "; ".join(wrong)


@pytest.mark.parametrize("role", ROLES)
def test_spec_defaults_pass_validation_on_an_empty_inventory(role):
    """The preflight validates every role's variables against its spec before the role's defaults
    are loaded, so for a variable the inventory does not set the spec default itself is checked."""
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    for entrypoint, spec in specs["argument_specs"].items():
        errors = validation_errors(spec.get("options") or {}, {})
        assert not errors, f"roles/{role} entry point {entrypoint}: {[str(e) for e in errors]}"


def test_variables_several_roles_document_agree():
    seen: dict[str, tuple[str, dict]] = {}
    wrong = []
    for role in ROLES:
        for name, option in spec_options(role).items():
            if not shared(role, name):
                continue
            facts = {key: option.get(key) for key in ("type", "elements", "default", "choices", "required")}
            if name in seen and not same(seen[name][1], facts):
                wrong.append(f"{name}: roles/{seen[name][0]} {seen[name][1]} != roles/{role} {facts}")
            seen.setdefault(name, (role, facts))
    assert "localguard_engine_port" in seen
    assert not wrong, "; ".join(wrong)
