"""SSH transport through the system OpenSSH client (ssh, scp), so ~/.ssh/config, the agent and ProxyJump apply.

Every call is an argument list (no local shell); remote command lines are built with
shlex.join. Host keys are always checked (BatchMode: never a prompt, StrictHostKeyChecking=yes
unless devices.yaml says ask); before the first connection `ssh -G` shows the settings OpenSSH
will use, and a known_hosts file of /dev/null or none, also from an ssh_config file, is refused.
An unknown or changed host key is an error that says so.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.config import DeviceConfig
from edgekd.errors import EdgekdError

KEEPALIVE = ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
"""Notice a dropped connection within a minute instead of hanging until the command timeout."""
LOCK_HELD = 75
"""The exit status `flock -n -E` gives when another process holds the device's workdir lock."""


def remote_command(*argvs: Sequence[str]) -> str:
    """One remote shell line running each argument list in turn, stopping at the first failure."""
    return " && ".join(shlex.join([str(a) for a in argv]) for argv in argvs)


@dataclass
class Ssh:
    """How to reach one device: builds ssh/scp argument lists and runs them with timeouts."""

    device: DeviceConfig
    ssh: str = "ssh"
    scp: str = "scp"
    _policy_checked: bool = field(default=False, repr=False)

    def options(self, port_flag: str) -> list[str]:
        d = self.device
        args = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={d.connect_timeout_s}", *KEEPALIVE]
        if d.ssh_config is not None:
            args += ["-F", str(d.ssh_config)]
        if d.port is not None:
            args += [port_flag, str(d.port)]
        if d.identity_file is not None:
            args += ["-i", str(d.identity_file), "-o", "IdentitiesOnly=yes"]
        for opt in d.ssh_options:
            args += ["-o", opt]
        if not any(opt.lower().startswith("stricthostkeychecking=") for opt in d.ssh_options):
            args += ["-o", "StrictHostKeyChecking=yes"]  # the first value wins: ssh_config files cannot turn it off
        return args

    def effective_options(self) -> dict[str, str]:
        """What OpenSSH will use for this device (`ssh -G`: options, ssh_config files and defaults merged)."""
        proc = self._call([self.ssh, "-G", *self.options("-p"), "--", self.destination], "ssh -G", 30)
        if proc.returncode != 0:
            raise self._fail(proc, "reading the ssh configuration")
        found = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            found.setdefault(key.lower(), value.strip())
        return found

    def check_host_key_policy(self) -> None:
        """EdgekdError unless OpenSSH will check host keys against real known_hosts files."""
        opts = self.effective_options()
        if opts.get("stricthostkeychecking") not in ("true", "yes", "ask"):
            raise EdgekdError(
                f"{self.where()}: ssh would accept unchecked host keys (StrictHostKeyChecking "
                f"{opts.get('stricthostkeychecking')}); edgekd needs yes or ask"
            )
        for key in ("userknownhostsfile", "globalknownhostsfile"):
            files = opts.get(key, "").split()
            if any(f == "none" or os.path.realpath(os.path.expanduser(f)) == os.devnull for f in files):
                raise EdgekdError(
                    f"{self.where()}: ssh would throw known host keys away ({key} {' '.join(files)}, "
                    f"from ssh_options or an ssh_config file); name a real known_hosts file"
                )

    @property
    def destination(self) -> str:
        host = self.device.host
        return f"{self.device.user}@{host}" if self.device.user else host

    def where(self) -> str:
        port = f":{self.device.port}" if self.device.port else ""
        return f"device '{self.device.name}' ({self.destination}{port})"

    def ssh_argv(self, command: str) -> list[str]:
        return [self.ssh, *self.options("-p"), "--", self.destination, command]

    def scp_argv(self, sources: Sequence[str], target: str) -> list[str]:
        return [self.scp, "-q", "-r", "-p", *self.options("-P"), "--", *sources, target]

    def remote(self, path: str) -> str:
        """`[user@]host:path` for scp (hosts with colons, i.e. IPv6, in brackets)."""
        host = self.destination
        if ":" in self.device.host and not self.device.host.startswith("["):
            host = host.replace(self.device.host, f"[{self.device.host}]")
        return f"{host}:{path}"

    def _call(
        self, argv: list[str], what: str, timeout: float, input: bytes | None = None
    ) -> subprocess.CompletedProcess:
        if not self._policy_checked and argv[1:2] != ["-G"]:
            self.check_host_key_policy()
            self._policy_checked = True
        try:
            return subprocess.run(
                argv,
                input=input,
                capture_output=True,
                timeout=timeout,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise EdgekdError(
                f"{argv[0]}: OpenSSH client not found; install openssh-client to reach {self.where()}"
            ) from None
        except subprocess.TimeoutExpired:
            raise EdgekdError(
                f"{self.where()}: {what} timed out after {timeout:g} s (devices.yaml: connect_timeout_s / command_timeout_s)"
            ) from None

    def _fail(self, proc: subprocess.CompletedProcess, what: str) -> EdgekdError:
        lines = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
        detail = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        if any("Host key verification failed" in ln or "REMOTE HOST IDENTIFICATION HAS CHANGED" in ln for ln in lines):
            return EdgekdError(
                f"{self.where()}: host key not known or changed ({detail}); add the device's key with "
                f"`ssh-keyscan` to known_hosts after checking it, or set UserKnownHostsFile in ssh_options"
            )
        if proc.returncode == 255:
            return EdgekdError(f"{self.where()}: unreachable over SSH: {detail}")
        return EdgekdError(f"{self.where()}: {what} failed: {detail}")

    def run(
        self, command: str, what: str, timeout: float | None = None, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a remote shell line (build it with `remote_command`); EdgekdError when unreachable or (with check) failing."""
        proc = self._call(self.ssh_argv(command), what, timeout or self.device.command_timeout_s, input)
        if proc.returncode == 255 or (check and proc.returncode != 0):
            raise self._fail(proc, what)
        return proc

    @contextmanager
    def holding_lock(self, lock: str) -> Iterator[None]:
        """Hold `flock` on the device's file `lock` for the block, through one SSH connection that waits on its
        stdin: the lock goes when the block ends, or with the connection if the host dies. A lock already held
        there is a one-line EdgekdError."""
        hold = ["flock", "-n", "-E", str(LOCK_HELD), lock, "sh", "-c", "echo locked; exec cat >/dev/null"]
        command = remote_command(["mkdir", "-p", posixpath.dirname(lock) or "."]) + " && exec " + shlex.join(hold)
        if not self._policy_checked:
            self.check_host_key_policy()
            self._policy_checked = True
        proc = subprocess.Popen(
            self.ssh_argv(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None
        if proc.stdout.readline().strip() != b"locked":
            _, stderr = proc.communicate(timeout=self.device.command_timeout_s)
            if proc.returncode == LOCK_HELD:
                raise EdgekdError(
                    f"{self.where()}: its workdir is in use by another edgekd ship; wait for it to finish"
                )
            raise self._fail(
                subprocess.CompletedProcess(proc.args, proc.returncode, b"", stderr), "locking the workdir"
            )
        try:
            yield
        finally:
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def upload(self, local: Path, remote_dir: str, timeout: float | None = None) -> None:
        """Copy the folder `local` into `remote_dir` on the device (it becomes remote_dir/<local.name>)."""
        proc = self._call(
            self.scp_argv([str(local)], self.remote(remote_dir + "/")),
            "upload",
            timeout or self.device.command_timeout_s,
        )
        if proc.returncode != 0:
            raise self._fail(proc, f"upload of {local.name}")

    def download(self, remote_path: str, local_dir: Path, timeout: float | None = None) -> None:
        """Copy `remote_path` (file or folder) from the device into `local_dir`."""
        proc = self._call(
            self.scp_argv([self.remote(remote_path)], str(local_dir) + "/"),
            "download",
            timeout or self.device.command_timeout_s,
        )
        if proc.returncode != 0:
            raise self._fail(proc, f"download of {remote_path}")
