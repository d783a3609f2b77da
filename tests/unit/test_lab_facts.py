"""`scripts/lab.py up|down` forgets the lab hosts' cached facts and nothing else: a Molecule
scenario running beside the lab (as under `make test`) stores its facts in the same directory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lab_script", ROOT / "scripts" / "lab.py")
lab = importlib.util.module_from_spec(spec)
# Its dataclasses look their module up by name.
sys.modules[spec.name] = lab
spec.loader.exec_module(lab)


def test_only_the_lab_hosts_facts_are_forgotten(tmp_path):
    cache = tmp_path / "facts"
    cache.mkdir()
    lab_hosts = ["s1_gpu1", "s1_gpu20", "s1_ca1", "s1_ctl", "gpu2"]
    others = ["s1_mol-engine-1", "s1_mol-key_rotation-ctl", "s1_gpu21", "s1_xctl", "notes"]
    for name in lab_hosts + others:
        (cache / name).write_text("{}")
    lab.forget_facts(cache=cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(others)


def test_the_directory_stays_for_a_playbook_that_is_running(tmp_path):
    cache = tmp_path / "facts"
    cache.mkdir()
    lab.forget_facts(cache=cache)
    assert cache.is_dir()
    lab.forget_facts(cache=tmp_path / "never-made")
