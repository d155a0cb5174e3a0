"""Named contexts, as kubectl keeps them: which fleet API, with which token and CA.

The configuration is one YAML file, ``$XDG_CONFIG_HOME/bpfleet/config.yaml`` (or
``~/.config/...``; ``BPFLEET_CONFIG`` names another), written with mode 0600 since it
holds tokens. A command talks to the context named by ``--context`` (or
``BPFLEET_CONTEXT``), else the current one; ``BPFLEET_API_URL``, ``BPFLEET_TOKEN``,
``BPFLEET_CA`` and ``BPFLEET_TRUST`` override its fields, and work without any file,
as a CI job uses them. Tokens are never printed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bpfleet_cli import inputs
from bpfleet_cli.exits import CommandError, ExitCode
from bpfleet_core import files

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,62}$"


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    token: SecretStr | None = None
    ca: Path | None = Field(default=None, description="CA bundle for the API's certificate.")
    trust: tuple[Path, ...] = Field(
        default=(), description="Public keys that pushed artifacts must be signed with."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _url(value)


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    current_context: str | None = Field(default=None, alias="current-context")
    contexts: dict[str, Context] = Field(default_factory=dict)


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get("BPFLEET_CONFIG"):
        return Path(environ["BPFLEET_CONFIG"])
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bpfleet" / "config.yaml"


def load(path: Path) -> Config:
    """The configuration; none yet is an empty one."""
    if not path.exists():
        return Config()
    document = inputs.read_yaml(inputs.read_text(path), str(path)) or {}
    try:
        return Config.model_validate(document)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CommandError(
            f"{path}: {where}: {first['msg'].removeprefix('Value error, ')}",
            ExitCode.CONFIGURATION,
        ) from None


def save(config: Config, path: Path) -> None:
    """Write it readable by its owner only: it holds tokens."""
    path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    document = {
        "current-context": config.current_context,
        "contexts": {
            name: {
                "url": context.url,
                **({"token": context.token.get_secret_value()} if context.token else {}),
                **({"ca": str(context.ca)} if context.ca else {}),
                **({"trust": [str(item) for item in context.trust]} if context.trust else {}),
            }
            for name, context in sorted(config.contexts.items())
        },
    }
    files.write_atomically(path, yaml.safe_dump(document, sort_keys=False), mode=FILE_MODE)


@dataclass(frozen=True)
class Target:
    """Where a command goes: the context's fields with the environment's overrides."""

    url: str
    token: str | None
    ca: Path | None
    trust: tuple[Path, ...]
    context: str | None  # its name; None when the environment alone says where

    def describe(self) -> str:
        return f"context {self.context} ({self.url})" if self.context else self.url


def resolve(name: str | None, environ: Mapping[str, str] = os.environ) -> Target:
    """The target of a command: see the module docstring for the order."""
    path = config_path(environ)
    config = load(path)
    chosen = name or environ.get("BPFLEET_CONTEXT") or None
    if chosen is not None and chosen not in config.contexts:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise CommandError(
            f"unknown context {chosen!r} in {path} (known: {known})", ExitCode.CONFIGURATION
        )
    if chosen is None and not environ.get("BPFLEET_API_URL"):
        chosen = config.current_context
        if chosen is not None and chosen not in config.contexts:
            raise CommandError(
                f"{path}: current-context {chosen!r} is not among its contexts",
                ExitCode.CONFIGURATION,
            )
    context = config.contexts[chosen] if chosen is not None else None
    url = environ.get("BPFLEET_API_URL") or (context.url if context else None)
    if not url:
        raise CommandError(
            "no fleet API: run 'bpfleet login URL', pass --context, or set BPFLEET_API_URL",
            ExitCode.CONFIGURATION,
        )
    try:
        url = _url(url)
    except ValueError as error:
        raise CommandError(f"BPFLEET_API_URL: {error}", ExitCode.CONFIGURATION) from None
    token = environ.get("BPFLEET_TOKEN") or (
        context.token.get_secret_value() if context and context.token else None
    )
    ca = (
        Path(environ["BPFLEET_CA"])
        if environ.get("BPFLEET_CA")
        else (context.ca if context else None)
    )
    trust = (
        tuple(Path(part) for part in environ["BPFLEET_TRUST"].split(":") if part)
        if environ.get("BPFLEET_TRUST")
        else (context.trust if context else ())
    )
    return Target(url=url, token=token, ca=ca, trust=trust, context=chosen)
