"""devices.yaml: typed, with one-line errors that name the line, the key and what would be valid."""

import re

import pytest

from edgekd.config import load_devices
from edgekd.errors import EdgekdError

GOOD = """\
devices:
  xavier:
    host: 192.168.1.20
    user: nvidia
    port: 2222
    identity_file: keys/jetson
    kind: jetson-agx-xavier
    ssh_options: [UserKnownHostsFile=~/.ssh/jetson_known_hosts]
    tensorrt: {precisions: [fp16, int8], dla_core: 0, static_shapes: true}
  lab-orin:
    host: orin-lab   # a Host alias from ~/.ssh/config
    kind: jetson-agx-orin
    backends: [tensorrt, onnxruntime]
"""


def write(tmp_path, text):
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    return path


def test_load_good_file(tmp_path):
    cfg = load_devices(write(tmp_path, GOOD))
    xavier = cfg.get("xavier")
    assert xavier.name == "xavier" and xavier.port == 2222 and xavier.user == "nvidia"
    assert xavier.identity_file == (tmp_path / "keys" / "jetson").resolve()
    assert xavier.tensorrt.dla_core == 0 and xavier.backends == ["tensorrt"] and xavier.workdir == "edgekd"
    orin = cfg.get("lab-orin")
    assert orin.user is None and orin.port is None and orin.identity_file is None and orin.python == "python3"


def test_unknown_device_suggests_the_nearest(tmp_path):
    with pytest.raises(
        EdgekdError, match=r"no device named 'xavir'; did you mean 'xavier'\? defined devices: lab-orin, xavier"
    ):
        load_devices(write(tmp_path, GOOD)).get("xavir")


def test_typo_names_line_and_nearest_key(tmp_path):
    text = GOOD.replace("    port: 2222\n", "    prot: 2222\n")
    with pytest.raises(EdgekdError, match=r"devices.yaml:5: unknown key 'devices.xavier.prot'; did you mean 'port'\?"):
        load_devices(write(tmp_path, text))


def test_typo_in_nested_tensorrt_section(tmp_path):
    text = GOOD.replace("precisions: [fp16, int8]", "precision: [fp16]")
    with pytest.raises(
        EdgekdError, match=r"unknown key 'devices.xavier.tensorrt.precision'; did you mean 'precisions'\?"
    ):
        load_devices(write(tmp_path, text))


@pytest.mark.parametrize(
    "option",
    [
        "StrictHostKeyChecking=no",
        "StrictHostKeyChecking=off",
        "StrictHostKeyChecking=false",  # OpenSSH reads false as no
        "StrictHostKeyChecking=FALSE",
        "StrictHostKeyChecking='no'",  # OpenSSH removes the quotes
        "StrictHostKeyChecking=accept-new",  # trusts whatever key answers first, silently under BatchMode
        "stricthostkeychecking=No",
    ],
)
def test_disabling_host_key_checking_is_refused(tmp_path, option):
    text = GOOD.replace("[UserKnownHostsFile=~/.ssh/jetson_known_hosts]", f'["{option}"]')
    with pytest.raises(
        EdgekdError, match=r"devices.yaml:8: devices.xavier.ssh_options: .*would accept unchecked host keys"
    ):
        load_devices(write(tmp_path, text))


@pytest.mark.parametrize(
    "option",
    [
        "UserKnownHostsFile=/dev/null",
        "GlobalKnownHostsFile=/dev/null",
        "UserKnownHostsFile=~/.ssh/known_hosts /dev/null",
        "UserKnownHostsFile=/dev/../dev/null",
        'UserKnownHostsFile="/dev/null"',
        "UserKnownHostsFile=none",
    ],
)
def test_throwing_known_hosts_away_is_refused_even_with_strict_checking(tmp_path, option):
    text = GOOD.replace("[UserKnownHostsFile=~/.ssh/jetson_known_hosts]", f"['{option}', StrictHostKeyChecking=yes]")
    with pytest.raises(EdgekdError, match=r"devices.yaml:8: devices.xavier.ssh_options: .*throws known host keys away"):
        load_devices(write(tmp_path, text))


@pytest.mark.parametrize(
    "option", ["KnownHostsCommand=/bin/echo %H ssh-ed25519 AAAA", "knownhostscommand=/usr/bin/true"]
)
def test_a_program_answering_for_host_keys_is_refused(tmp_path, option):
    """Issue 22 item 9: KnownHostsCommand bypassed host-key checking (the program may vouch for any key)."""
    text = GOOD.replace("[UserKnownHostsFile=~/.ssh/jetson_known_hosts]", f"['{option}']")
    with pytest.raises(
        EdgekdError, match=r"devices.xavier.ssh_options: .*lets a program answer for the device's host key"
    ):
        load_devices(write(tmp_path, text))


@pytest.mark.parametrize("name", ["x\n", "lab-orin\n"])
def test_a_device_name_with_a_trailing_newline_is_refused(tmp_path, name):
    """Issue 22 item 9: `re.match(...$)` let a trailing newline through."""
    text = GOOD.replace("  lab-orin:", f"  {name!r}:".replace("'", '"'))
    with pytest.raises(EdgekdError, match=r"device name .* is not a plain name"):
        load_devices(write(tmp_path, text))


@pytest.mark.parametrize("option", ["StrictHostKeyChecking=yes", "StrictHostKeyChecking=ask", "UserKnownHostsFile=k"])
def test_checking_options_are_kept(tmp_path, option):
    text = GOOD.replace("[UserKnownHostsFile=~/.ssh/jetson_known_hosts]", f"[{option}]")
    assert load_devices(write(tmp_path, text)).get("xavier").ssh_options == [option]


@pytest.mark.parametrize("name", [".", "..", ".hidden", "-x", "a/b", "a b", "x" * 65])
def test_device_names_are_plain_names(tmp_path, name):
    text = GOOD.replace("  lab-orin:", f"  '{name}':")
    with pytest.raises(EdgekdError, match=r"devices.yaml:10: device name .* is not a plain name"):
        load_devices(write(tmp_path, text))


@pytest.mark.parametrize(
    "old, new, fragment",
    [
        ("port: 2222", "port: 70000", "devices.xavier.port: Input should be less than or equal to 65535"),
        (
            "user: nvidia",
            "backends: [tflite]",
            "devices.xavier.backends.0: Input should be 'tensorrt' or 'onnxruntime'",
        ),
        ("user: nvidia", "workdir: ../etc", "workdir '../etc' must not start with '-' or contain '..'"),
        ("host: 192.168.1.20", "host: -oProxyCommand=x", "devices.xavier.host"),
    ],
)
def test_bad_values_are_named(tmp_path, old, new, fragment):
    with pytest.raises(EdgekdError, match=r"devices.yaml:\d+: .*" + re.escape(fragment)):
        load_devices(write(tmp_path, GOOD.replace(old, new)))


def test_missing_kind(tmp_path):
    with pytest.raises(EdgekdError, match=r"missing required key 'devices.x.kind'"):
        load_devices(write(tmp_path, "devices:\n  x:\n    host: h\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(EdgekdError, match="devices file not found"):
        load_devices(tmp_path / "nope.yaml")
    with pytest.raises(EdgekdError, match=r"devices.yaml:3: malformed YAML"):
        load_devices(write(tmp_path, "devices:\n  x: [\n"))
