"""The role README check (scripts/role-docs.py --check, run by `make lint`) fails on a stale README.

Each test works on a copy of one role in a temporary collection; the repository is only read.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("role_docs", ROOT / "scripts" / "role-docs.py")
role_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(role_docs)

ROLE = "engine"
ROLES = sorted(path.name for path in (ROOT / "roles").iterdir() if path.is_dir())


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """galaxy.yml and one role, README included, as the repository has them."""
    shutil.copy2(ROOT / "galaxy.yml", tmp_path / "galaxy.yml")
    shutil.copytree(ROOT / "roles" / ROLE, tmp_path / "roles" / ROLE)
    return tmp_path


def run(*args: str) -> int:
    return role_docs.main(list(args))


def test_check_passes_on_the_committed_readme(collection, capsys):
    before = (ROOT / "roles" / ROLE / "README.md").read_bytes()
    assert run("--check", "--root", str(collection)) == 0
    assert "1 role READMEs match" in capsys.readouterr().out
    assert (ROOT / "roles" / ROLE / "README.md").read_bytes() == before


def test_check_fails_on_a_stale_readme_after_a_spec_edit(collection, capsys):
    specs_path = collection / "roles" / ROLE / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(specs_path.read_text())
    options = specs["argument_specs"]["main"]["options"]
    options["engine_gpu_group"]["description"] = "The GPU devices group (edited)."
    options["engine_new_option"] = {"type": "int", "default": 7, "description": "An option the README lacks."}
    specs_path.write_text(yaml.safe_dump(specs, sort_keys=False))
    readme = collection / "roles" / ROLE / "README.md"
    committed = readme.read_text()

    assert run("--check", "--root", str(collection)) == 1
    out, err = capsys.readouterr()
    assert f"stale README for role(s) {ROLE}:" in err
    assert f"--- roles/{ROLE}/README.md (committed)" in out
    assert "+| `engine_gpu_group` | str | `localguard-gpu` | The GPU devices group (edited). |" in out
    assert "+| `engine_new_option` | int | `7` | An option the README lacks. |" in out
    assert readme.read_text() == committed  # --check writes nothing

    # `make docs` on the copy brings it back in line and keeps the hand-written intro.
    assert run("--root", str(collection)) == 0
    assert run("--check", "--root", str(collection)) == 0
    intro = committed.split(role_docs.BEGIN)[0]
    assert readme.read_text().startswith(intro) and "engine_new_option" in readme.read_text()


def test_check_fails_on_a_missing_readme_and_a_hand_edit_inside_the_markers(collection, capsys):
    shutil.copytree(ROOT / "roles" / "preflight", collection / "roles" / "preflight")
    (collection / "roles" / "preflight" / "README.md").unlink()
    readme = collection / "roles" / ROLE / "README.md"
    readme.write_text(readme.read_text().replace("Dependencies: none.", "Dependencies: nginx."))
    assert run("--check", "--root", str(collection)) == 1
    out, err = capsys.readouterr()
    assert f"stale README for role(s) {ROLE}, preflight:" in err
    assert "roles/preflight/README.md (missing)" in out


def test_check_ignores_the_hand_written_intro(collection):
    readme = collection / "roles" / ROLE / "README.md"
    text = readme.read_text()
    readme.write_text(text.replace(role_docs.BEGIN, "One more hand-written line.\n\n" + role_docs.BEGIN))
    assert run("--check", "--root", str(collection)) == 0


@pytest.mark.parametrize("role", ROLES)
def test_readme_yaml_blocks_parse_back_to_the_spec(role):
    """The template writes defaults too long for the table as YAML: they must read back as the spec
    has them, and the example playbook must parse."""
    readme = (ROOT / "roles" / role / "README.md").read_text()
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"].get("options") or {}
    blocks = re.findall(r"^```yaml\n(.*?)^```$", readme, flags=re.M | re.S)
    example = yaml.safe_load(blocks[-1])
    assert example[0]["roles"][0]["role"] == f"localguard.hardening.{role}"
    for block in blocks[:-1]:
        for name, value in yaml.safe_load(block).items():
            assert value == options[name]["default"], name
