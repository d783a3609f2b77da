#!/usr/bin/env python3
"""Generate each role's README from its meta/argument_specs.yml with aar-doc, or check they are current.

Usage:
  scripts/role-docs.py [--root DIR]            rewrite roles/*/README.md (`make docs`)
  scripts/role-docs.py --check [--root DIR]    regenerate into a temporary copy and fail, naming each
                                               stale README and showing its diff (`make lint`)

aar-doc (pinned in pyproject.toml) reads meta/argument_specs.yml, meta/main.yml and galaxy.yml;
scripts/role-docs.md.j2 lays the README out. It writes between <!-- BEGIN_ANSIBLE_DOCS --> and
<!-- END_ANSIBLE_DOCS --> only (its inject mode), so the hand-written intro above them stays. A role
without a README gets one with a title. --root points at another copy of the collection (the tests
use one).
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().with_name("role-docs.md.j2")
BEGIN = "<!-- BEGIN_ANSIBLE_DOCS -->"
END = "<!-- END_ANSIBLE_DOCS -->"


def roles(root: Path) -> list[Path]:
    return sorted(path for path in (root / "roles").iterdir() if path.is_dir())


def fqcn(root: Path, role: str) -> str:
    galaxy = root / "galaxy.yml"
    if not galaxy.exists():
        return role
    meta = yaml.safe_load(galaxy.read_text())
    return f"{meta['namespace']}.{meta['name']}.{role}"


def render(role_dir: Path, title: str) -> None:
    """Write role_dir/README.md with aar-doc, in process (one interpreter for every role keeps it fast)."""
    from aar_doc.cli import app

    readme = role_dir / "README.md"
    if not readme.exists():
        readme.write_text(f"# {title}\n\n{BEGIN}\n{END}\n")
    args = ["--output-template", str(TEMPLATE), "--output-mode", "inject", str(role_dir), "markdown"]
    code = app(args, prog_name="aar-doc", standalone_mode=False)
    if code:
        raise SystemExit(f"role-docs: aar-doc failed on {role_dir} (exit {code})")


def write(root: Path) -> int:
    changed = []
    for role_dir in roles(root):
        readme = role_dir / "README.md"
        before = readme.read_text() if readme.exists() else None
        render(role_dir, fqcn(root, role_dir.name))
        if readme.read_text() != before:
            changed.append(role_dir.name)
    print(f"role-docs: {len(roles(root))} role READMEs, rewritten: {', '.join(changed) or 'none'}")
    return 0


def check(root: Path) -> int:
    """Regenerate a copy of each role's meta/ and README.md in a temporary tree and compare."""
    stale = []
    with tempfile.TemporaryDirectory(prefix="role-docs-") as tmp:
        copy_root = Path(tmp)
        if (root / "galaxy.yml").exists():
            shutil.copy2(root / "galaxy.yml", copy_root / "galaxy.yml")
        for role_dir in roles(root):
            copy = copy_root / "roles" / role_dir.name
            copy.mkdir(parents=True)
            if (role_dir / "meta").is_dir():
                shutil.copytree(role_dir / "meta", copy / "meta")
            readme = role_dir / "README.md"
            committed = readme.read_text() if readme.exists() else ""
            if readme.exists():
                shutil.copy2(readme, copy / "README.md")
            render(copy, fqcn(root, role_dir.name))
            regenerated = (copy / "README.md").read_text()
            if regenerated != committed:
                stale.append(role_dir.name)
                name = f"roles/{role_dir.name}/README.md"
                sys.stdout.writelines(
                    difflib.unified_diff(
                        committed.splitlines(keepends=True),
                        regenerated.splitlines(keepends=True),
                        fromfile=f"{name} (committed)" if readme.exists() else f"{name} (missing)",
                        tofile=f"{name} (from meta/argument_specs.yml)",
                    )
                )
    if stale:
        print(
            f"role-docs: stale README for role(s) {', '.join(stale)}: run `make docs` and commit the result",
            file=sys.stderr,
        )
        return 1
    print(f"role-docs: {len(roles(root))} role READMEs match their argument_specs")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a committed README is stale")
    parser.add_argument("--root", type=Path, default=ROOT, help="the collection (default: this repository)")
    args = parser.parse_args(argv)
    return check(args.root) if args.check else write(args.root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
