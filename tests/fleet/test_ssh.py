"""The SSH argument lists: host keys always checked, options from devices.yaml, remote lines quoted safely."""

import subprocess

import pytest

from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError
from edgekd.fleet.ssh import Ssh, remote_command


def device(**kw) -> DeviceConfig:
    d = DeviceConfig(**{"host": "jetson", "kind": "jetson-agx-xavier", **kw})
    d.name = "xav"
    return d


def test_remote_command_survives_a_shell():
    nasty = ["printf", "%s\n", "a b", "$(touch /tmp/pwned)", "x; rm -rf /", "'quoted'", "*"]
    line = remote_command(["true"], nasty)
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == nasty[2:]


def test_remote_command_stops_at_first_failure():
    proc = subprocess.run(["sh", "-c", remote_command(["false"], ["echo", "ran"])], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stdout == ""


def test_ssh_argv_uses_config_and_keeps_host_key_checking():
    ssh = Ssh(device(user="nvidia", port=2222, identity_file="/keys/id", ssh_options=["UserKnownHostsFile=/k/known"]))
    argv = ssh.ssh_argv("echo hi")
    assert argv[0] == "ssh" and argv[-3:] == ["--", "nvidia@jetson", "echo hi"]
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/keys/id"
    opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
    assert "BatchMode=yes" in opts and "UserKnownHostsFile=/k/known" in opts and "ConnectTimeout=10" in opts
    assert [o for o in opts if o.lower().startswith("stricthostkeychecking")] == ["StrictHostKeyChecking=yes"]


def test_an_ssh_config_cannot_switch_host_key_checking_off(tmp_path):
    """OpenSSH's own view (`ssh -G`, no connection) of what edgekd passes, with an ssh_config that says `no`."""
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /k/known\n")
    ssh = Ssh(device(ssh_config=config))
    assert ssh.effective_options()["stricthostkeychecking"] == "true"
    ssh.check_host_key_policy()
    asked = Ssh(device(ssh_config=config, ssh_options=["StrictHostKeyChecking=ask"]))
    assert asked.effective_options()["stricthostkeychecking"] == "ask"


@pytest.mark.parametrize(
    "line", ["UserKnownHostsFile /dev/null", "GlobalKnownHostsFile /dev/null", "UserKnownHostsFile none"]
)
def test_known_hosts_thrown_away_by_an_ssh_config_is_refused_before_connecting(tmp_path, line):
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  {line}\n")
    ssh = Ssh(device(ssh_config=config, connect_timeout_s=1))
    with pytest.raises(EdgekdError, match="ssh would throw known host keys away"):
        ssh.run("true", "a command")


def test_plain_alias_leaves_everything_to_ssh_config():
    ssh = Ssh(device())
    argv = ssh.ssh_argv("true")
    assert argv[-2] == "jetson" and "-p" not in argv and "-i" not in argv and "-F" not in argv


def test_scp_argv_uses_capital_p_and_remote_paths():
    ssh = Ssh(device(port=2200, host="fe80::1"))
    argv = ssh.scp_argv(["/local/dir"], ssh.remote("work/staging/"))
    assert argv[:2] == ["scp", "-q"] and argv[argv.index("-P") + 1] == "2200"
    assert argv[-2:] == ["/local/dir", "[fe80::1]:work/staging/"]
