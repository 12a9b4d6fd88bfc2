"""Typed model of devices.yaml (the edge devices `edgekd ship` reaches over SSH) and its loader."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from edgekd.config.loader import _format_error, _key_lines, _model_at, _relevant, read_config
from edgekd.config.pipeline import Section, TensorRTConfig, TimingConfig
from edgekd.errors import EdgekdError
from edgekd.ondevice.names import PLAIN_NAME, is_plain_name
from edgekd.ondevice.text import did_you_mean


class DeviceBenchConfig(TimingConfig):
    """How the on-device benchmark times each artifact (the same fields as the pipeline's `benchmark` section)."""


DEVICE_NAME = f"^{PLAIN_NAME}$"
"""A plain name, safe as a file name (never `.`, `..` or hidden): it names bench/<name>.json and tensorrt/<name>/."""


class DeviceConfig(Section):
    """One edge device reached over SSH (system OpenSSH: ~/.ssh/config, the agent and ProxyJump apply)."""

    host: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.:\[\]-]+$", description="Host name, IP address, or a Host alias from ~/.ssh/config."
    )
    user: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$", description="Login name; default: ~/.ssh/config's User, else your own."
    )
    port: int | None = Field(None, ge=1, le=65535, description="SSH port; default: ~/.ssh/config's Port, else 22.")
    identity_file: Path | None = Field(
        None, description="Private key file (ssh -i); default: the agent and ~/.ssh/config."
    )
    ssh_config: Path | None = Field(None, description="An ssh_config file to use instead of ~/.ssh/config (ssh -F).")
    ssh_options: list[str] = Field(
        default_factory=list,
        description="Extra `Key=Value` ssh options (ssh -o), e.g. `UserKnownHostsFile=~/.ssh/jetson_known_hosts`. Host key checking cannot be turned off.",
    )
    kind: str = Field(
        ...,
        pattern=r"^[a-z0-9][a-z0-9_.-]*$",
        description="Device kind, e.g. `jetson-agx-xavier`; engines are shared between devices of one kind and TensorRT version.",
    )
    workdir: str = Field(
        "edgekd",
        pattern=r"^[A-Za-z0-9_./-]+$",
        description="Folder on the device for bundles, engines and results; relative paths are under the login's home.",
    )
    python: str = Field(
        "python3",
        pattern=r"^[A-Za-z0-9_./+-]+$",
        description="Python 3.8+ on the device (with numpy, and tensorrt + pycuda or onnxruntime).",
    )
    backends: list[Literal["tensorrt", "onnxruntime"]] = Field(
        default_factory=lambda: ["tensorrt"],
        min_length=1,
        description="What the device benchmarks: TensorRT engines built there, and/or the ONNX files in ONNX Runtime.",
    )
    ort_providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        description="ONNX Runtime providers in order of preference; those the device lacks are dropped.",
    )
    record_power_mode: bool = Field(True, description="Record `nvpmodel -q` (the Jetson power mode) in the bench file.")
    lock_clocks: bool = Field(
        False,
        description="Run `jetson_clocks` (with your sudo rights, non-interactive) for the bench and restore the previous clocks afterwards.",
    )
    connect_timeout_s: int = Field(10, ge=1, description="Seconds to wait for the SSH connection.")
    command_timeout_s: int = Field(3600, ge=1, description="Seconds a remote build + benchmark, or one copy, may take.")
    tensorrt: TensorRTConfig = Field(
        default_factory=TensorRTConfig, description="How engines are built on this device."
    )
    benchmark: DeviceBenchConfig = Field(
        default_factory=DeviceBenchConfig, description="How the device times each artifact."
    )

    name: str = Field("", exclude=True, description="The device's name: its key under `devices` (set by the loader).")

    @field_validator("ssh_options")
    @classmethod
    def _check_ssh_options(cls, options: list[str]) -> list[str]:
        for opt in options:
            key, sep, value = opt.partition("=")
            if not sep or not key.isalpha() or not value.strip():
                raise ValueError(f"ssh option {opt!r} is not `Key=Value` (e.g. `UserKnownHostsFile=/path/known_hosts`)")
            try:
                words = [w.lower() for w in shlex.split(value)]  # as OpenSSH reads it: quotes removed, any case
            except ValueError:
                raise ValueError(f"ssh option {opt!r} has unbalanced quotes") from None
            if key.lower() == "stricthostkeychecking" and words not in (["yes"], ["ask"]):
                raise ValueError(
                    f"ssh option {opt!r} would accept unchecked host keys (only yes or ask are allowed); "
                    "add the device's key to a known_hosts file (ssh-keyscan, after checking it) instead"
                )
            if key.lower() in ("userknownhostsfile", "globalknownhostsfile") and any(
                w == "none" or os.path.realpath(os.path.expanduser(w)) == os.devnull for w in words
            ):
                raise ValueError(f"ssh option {opt!r} throws known host keys away; name a real known_hosts file")
            if key.lower() == "knownhostscommand":  # a program that may vouch for any key the device shows
                raise ValueError(
                    f"ssh option {opt!r} lets a program answer for the device's host key; "
                    "name a known_hosts file with UserKnownHostsFile instead"
                )
        return options

    @field_validator("host")
    @classmethod
    def _check_host(cls, host: str) -> str:
        if host.startswith("-"):
            raise ValueError(f"host {host!r} cannot start with '-'")
        return host

    @model_validator(mode="after")
    def _check_device(self) -> DeviceConfig:
        if self.workdir.startswith("-") or ".." in self.workdir.split("/"):
            raise ValueError(f"workdir {self.workdir!r} must not start with '-' or contain '..'")
        return self


class DevicesConfig(Section):
    """A whole devices.yaml: named devices."""

    devices: dict[Annotated[str, Field(pattern=DEVICE_NAME)], DeviceConfig] = Field(
        default_factory=dict, description="Devices by name; the name is used in bench/<name>.json and tensorrt/<name>/."
    )
    source: Path | None = Field(None, exclude=True, description="The YAML file this came from (set by the loader).")

    def get(self, name: str) -> DeviceConfig:
        """The device called `name`, or an EdgekdError listing the defined ones."""
        if name in self.devices:
            return self.devices[name]
        where = self.source or "devices.yaml"
        hint = did_you_mean(name, list(self.devices))
        defined = ", ".join(sorted(self.devices)) or "none"
        raise EdgekdError(f"{where}: no device named '{name}'; {hint}defined devices: {defined}")


def _devices_model_at(loc: tuple) -> type[BaseModel] | None:
    """The model holding the key at `loc` in devices.yaml (`devices.<name>` steps into DeviceConfig)."""
    if not loc:
        return DevicesConfig
    if loc[0] != "devices" or len(loc) < 2:
        return None
    return _model_at(DeviceConfig, loc[2:])


def load_devices(path: str | Path) -> DevicesConfig:
    """Read and validate a devices.yaml; relative key and config file paths resolve against its folder."""
    path = Path(path)
    text, data = read_config(path, "devices file")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise EdgekdError(f"{path}: expected a mapping with a `devices` key, got {type(data).__name__}")
    lines = _key_lines(text, str(path))
    named = data.get("devices")
    for name in named if isinstance(named, dict) else {}:
        if not is_plain_name(name):
            line = lines.get(("devices", name))
            raise EdgekdError(
                f"{path}{f':{line}' if line else ''}: device name {name!r} is not a plain name "
                "(up to 64 letters, digits, '_', '.', '-', not starting with '.' or '-')"
            )
    try:
        cfg = DevicesConfig.model_validate(data)
    except ValidationError as e:
        errors = _relevant(e.errors())
        err = errors[0]
        more = f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])
            parent = _devices_model_at(loc[:-1])
            valid = sorted(k for k in (parent.model_fields if parent else {}) if k not in ("source", "name"))
            hint = did_you_mean(str(loc[-1]), valid)
            line = lines.get(loc)
            place = f"{path}:{line}" if line else str(path)
            dotted = ".".join(str(p) for p in loc)
            raise EdgekdError(
                f"{place}: unknown key '{dotted}'; {hint}valid keys here: {', '.join(valid)}{more}"
            ) from None
        raise EdgekdError(_format_error(err, lines, str(path)) + more) from None
    base = path.parent.resolve()
    for name, device in cfg.devices.items():
        device.name = name
        for field in ("identity_file", "ssh_config"):
            value = getattr(device, field)
            if value is not None:
                value = value.expanduser()
                setattr(device, field, value if value.is_absolute() else (base / value).resolve())
    cfg.source = path.resolve()
    return cfg
