"""Accounts, passwords and PAM (BL-ACC-*), checked on the host itself. Runs under Molecule and on the lab.

su and passwd insist on a terminal, so the behaviour tests drive them through a pseudo-terminal
inside the host, as an unprivileged caller (root's su skips authentication), against a throwaway
account each test creates and removes, failed or not.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
from dataclasses import dataclass

import pytest

# Strong: 16 characters, four classes, no run or sequence longer than 2, no dictionary word.
STRONG = "Kq7#vR2!mW9$pL4x"
STRONG_NEXT = "Zt5&nB8@hY3%cF6j"
# What Debian's defaults accept (pwquality: 8 characters, no classes) and the policy refuses.
WEAK = {"short, four classes": "Tr0ub4dor&3", "long, one class": "plumtigerquartzvalley"}
WRONG = "Not-the-passw0rd!"
MARK = "LG-SU-OK"

# Runs inside the host: the command in a pseudo-terminal as `user`, each prompt (regex) answered
# with its reply; prints the exit code and everything the terminal showed, as JSON.
PTY_DRIVER = r"""
import json, os, pty, pwd, re, select, sys, time
user, replies, argv = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    account = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.chdir("/")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": account.pw_dir}
    os.execvpe(argv[0], argv, env)
out, pending, deadline = b"", b"", time.monotonic() + 90
while time.monotonic() < deadline:
    if not select.select([fd], [], [], 0.5)[0]:
        continue
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out, pending = out + data, pending + data
    for prompt, reply in replies:
        if re.search(prompt.encode(), pending):
            os.write(fd, reply.encode() + b"\n")
            pending = b""
            break
else:
    os.kill(pid, 9)
rc = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps({"rc": rc, "out": out.decode(errors="replace")}))
"""


@dataclass
class Account:
    name: str
    password: str
    shadow_at_creation: list[str]


def in_pty(host, user: str, replies: list[tuple[str, str]], *argv: str) -> dict:
    code = base64.b64encode(PTY_DRIVER.encode()).decode()
    command = f"python3 -c \"import base64; exec(base64.b64decode('{code}'))\" " + shlex.join(
        [user, json.dumps(replies), *argv]
    )
    return json.loads(host.check_output(command))


def su(host, account: Account, password: str) -> dict:
    """`su ACCOUNT` from an unprivileged caller, so PAM's auth stack really runs."""
    return in_pty(host, "nobody", [(r"Password: ?$", password)], "su", account.name, "-c", f"echo {MARK}")


def passwd(host, account: Account, old: str, new: str) -> dict:
    """`passwd` run by the account itself: the current password, then the new one, as often as asked."""
    replies = [(r"[Cc]urrent password: ?$", old), (r"Retype new password: ?$", new)]
    replies.append((r"New password: ?$", new))
    return in_pty(host, account.name, replies, "passwd")


def shadow(host, name: str) -> list[str]:
    return host.check_output(f"getent shadow {shlex.quote(name)}").split(":")


def login_defs(host) -> dict[str, str]:
    values = {}
    for line in host.file("/etc/login.defs").content_string.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            values[fields[0]] = fields[1]
    return values


def config_values(text: str) -> dict[str, str]:
    """key = value lines of faillock.conf / pwquality.conf; a bare key (even_deny_root) is 'on'."""
    values = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip() or "on"
    return values


@pytest.fixture
def account(host):
    """A throwaway account with a known password, removed (and its lockout and history with it)
    whatever the test did. Its minimum password age is cleared so it may change its password now."""
    name = f"lgt{secrets.token_hex(3)}"
    host.check_output(f"useradd --create-home --shell /bin/bash {name}")
    try:
        created = shadow(host, name)
        set_password = host.run(f"printf '%s:%s\\n' {name} {shlex.quote(STRONG)} | chpasswd")
        assert set_password.rc == 0, set_password.stderr
        host.check_output(f"chage --mindays 0 {name}")
        yield Account(name, STRONG, created)
    finally:
        host.run(f"faillock --user {name} --reset")
        host.run(f"sed -i '/^{name}:/d' /etc/security/opasswd")
        host.run(f"userdel --remove {name}")


@pytest.mark.molecule_only
def test_bl_acc_03_failed_passwords_lock_the_account_until_reset(host, account):
    deny = int(config_values(host.file("/etc/security/faillock.conf").content_string).get("deny", "3"))
    # The allowed path first, so the refusals below cannot come from a broken su or a wrong password.
    assert MARK in su(host, account, account.password)["out"]
    for _ in range(deny):
        assert MARK not in su(host, account, WRONG)["out"]
    locked = su(host, account, account.password)
    assert locked["rc"] != 0 and MARK not in locked["out"], "the right password still opened a locked account"
    host.check_output(f"faillock --user {account.name} --reset")
    assert MARK in su(host, account, account.password)["out"]


def test_bl_acc_03_lockout_thresholds_and_root_spared(host, hostvars):
    """Bounds from CIS Debian 12 5.3.3.1: at most 5 failures, unlocked after 15 minutes or by an admin."""
    # pam_faillock's built-in values where the file is silent: deny 3, fail_interval 900, unlock_time 600.
    settings = {"deny": "3", "fail_interval": "900", "unlock_time": "600"}
    settings.update(config_values(host.file("/etc/security/faillock.conf").content_string))
    assert 1 <= int(settings["deny"]) <= 5
    assert int(settings["fail_interval"]) >= 900
    assert int(settings["unlock_time"]) == 0 or int(settings["unlock_time"]) >= 900, settings["unlock_time"]
    # Root is the console's last way in: locked only when the inventory asks for it.
    assert ("even_deny_root" in settings) == bool(hostvars.get("baseline_accounts_faillock_deny_root", False))


@pytest.mark.molecule_only
def test_bl_acc_02_weak_password_refused_strong_accepted(host, account):
    for why, weak in WEAK.items():
        refused = passwd(host, account, account.password, weak)
        assert refused["rc"] != 0, f"passwd accepted a weak password ({why})"
        assert "BAD PASSWORD" in refused["out"]
    # Three tries before passwd gives up (retry), each refused.
    assert refused["out"].count("BAD PASSWORD") == 3
    accepted = passwd(host, account, account.password, STRONG_NEXT)
    assert accepted["rc"] == 0, accepted["out"]


def test_bl_acc_02_root_is_held_to_the_policy_too(host, account):
    """enforce_for_root: without it pam_pwquality only warns root and sets the weak password anyway."""
    weak = host.run(f"printf '%s:%s\\n' {account.name} {shlex.quote(WEAK['short, four classes'])} | chpasswd")
    assert weak.rc != 0
    strong = host.run(f"printf '%s:%s\\n' {account.name} {shlex.quote(STRONG_NEXT)} | chpasswd")
    assert strong.rc == 0, strong.stderr


@pytest.mark.molecule_only
def test_bl_acc_04_a_recent_password_cannot_come_back(host, account):
    assert passwd(host, account, account.password, STRONG_NEXT)["rc"] == 0
    back = passwd(host, account, STRONG_NEXT, account.password)
    assert back["rc"] != 0, "the previous password was accepted again"
    assert "already used" in back["out"]


def test_bl_acc_05_passwords_are_hashed_with_yescrypt(host, account):
    assert login_defs(host)["ENCRYPT_METHOD"] == "YESCRYPT"
    # Set through PAM (pam_unix) ...
    assert shadow(host, account.name)[1].startswith("$y$")
    # ... and outside it: chgpasswd hashes with login.defs' ENCRYPT_METHOD (Debian's default: SHA-512).
    group = account.name + "g"
    host.check_output(f"groupadd {group}")
    try:
        host.check_output(f"printf '%s:%s\\n' {group} {shlex.quote(STRONG)} | chgpasswd")
        assert host.check_output(f"getent gshadow {group}").split(":")[1].startswith("$y$")
    finally:
        host.run(f"groupdel {group}")


def test_bl_acc_06_new_accounts_get_password_ageing(host, account):
    """Bounds from CIS Debian 12 5.4.1.1-3: at most a year, at least a day, a week's warning."""
    defs = login_defs(host)
    assert 0 < int(defs["PASS_MAX_DAYS"]) <= 365
    assert int(defs["PASS_MIN_DAYS"]) >= 1
    assert int(defs["PASS_WARN_AGE"]) >= 7
    # useradd took them from login.defs: minimum, maximum, warning.
    expected = [defs["PASS_MIN_DAYS"], defs["PASS_MAX_DAYS"], defs["PASS_WARN_AGE"]]
    assert account.shadow_at_creation[3:6] == expected


def test_bl_acc_07_existing_accounts_with_a_password_are_aged(host, hostvars):
    excluded = set(hostvars.get("baseline_accounts_ageing_exclude", []))
    entries = [line.split(":") for line in host.check_output("getent shadow").splitlines()]
    with_password = [e for e in entries if e[1].startswith("$") and e[0] not in excluded]
    if not with_password:
        pytest.skip("no account on this host has a password: nothing to age")
    for name, _, _, min_days, max_days, warn, *_ in with_password:
        assert max_days and 0 < int(max_days) <= 365, f"{name}: maximum age {max_days!r}"
        assert min_days and int(min_days) >= 1, f"{name}: minimum age {min_days!r}"
        assert warn and int(warn) >= 7, f"{name}: warning {warn!r}"
    # Locked and password-less system accounts keep no ageing they could be expired by.
    locked = [e for e in entries if e[0] in ("daemon", "nobody", "sshd") and not e[1].startswith("$")]
    assert all(e[4] in ("", "99999") for e in locked)


def test_bl_acc_08_login_sessions_get_umask_027(host, account):
    umask = int(login_defs(host)["UMASK"], 8)
    assert umask & 0o027 == 0o027, f"UMASK {umask:03o} lets the group write or others in"
    # su's session stack runs pam_umask, as SSH's and the console's do; root's own umask is 022.
    session = host.check_output(f"su --login {account.name} --command umask").strip()
    assert int(session, 8) & 0o027 == 0o027, f"a login session got umask {session}"


def interactive_homes(host) -> list[tuple[str, str, int]]:
    homes = []
    for line in host.check_output("getent passwd").splitlines():
        name, _, uid, _, _, home, shell = line.split(":")
        interactive = (uid == "0" or 1000 <= int(uid) <= 60000) and not re.search(r"(nologin|false)$", shell)
        if interactive and host.file(home).is_directory and host.file(home).uid == int(uid):
            homes.append((name, home, int(uid)))
    return homes


def test_bl_acc_09_home_directories_closed_to_others(host):
    for name, home, _ in interactive_homes(host):
        mode = host.file(home).mode
        assert mode & 0o027 == 0, f"{name}'s home {home} is {mode:04o}"


def test_bl_acc_10_user_init_files_writable_by_their_owner_only(host):
    for name, home, _ in interactive_homes(host):
        writable = host.check_output(f"find {shlex.quote(home)} -maxdepth 1 -type f -name '.*' -perm /022")
        assert not writable, f"{name}'s init files writable by group or others: {writable}"


def test_bl_acc_02_03_04_08_pam_stack_built_by_pam_auth_update(host):
    """The profiles are enabled the Debian way, so a package's pam-auth-update run keeps them."""
    modules = set(host.check_output("grep -h '^Module:' /var/lib/pam/*").replace("Module: ", "").split())
    profiles = {"localguard-faillock", "localguard-faillock-authfail", "localguard-pwquality"}
    assert profiles | {"localguard-pwhistory", "localguard-umask", "unix"} <= modules
    assert "pwquality" not in modules, "Debian's pwquality profile (retry=3 on the module line) is still on"
    auth = host.file("/etc/pam.d/common-auth").content_string.splitlines()
    order = [re.search(r"pam_\w+\.so.*", line).group(0) for line in auth if line.startswith("auth")]
    preauth, unix, authfail = (
        next(i for i, line in enumerate(order) if line.startswith(module))
        for module in ("pam_faillock.so preauth", "pam_unix.so", "pam_faillock.so authfail")
    )
    assert preauth < unix < authfail
    before = host.check_output("cat /etc/pam.d/common-*")
    host.check_output("DEBIAN_FRONTEND=noninteractive pam-auth-update --package")
    assert host.check_output("cat /etc/pam.d/common-*") == before
