"""The only module that talks to forges: open a pull request (a merge request on GitLab)
for a proposal's branch, through the forge's REST API, as each documents it:

- GitHub: ``POST {api}/repos/{owner}/{repo}/pulls`` with ``title``, ``head``, ``base``,
  ``body``; ``Authorization: Bearer <token>``, ``Accept: application/vnd.github+json``,
  ``X-GitHub-Api-Version: 2022-11-28``; answers ``html_url`` and ``number``.
- GitLab: ``POST {api}/projects/{id}/merge_requests`` (the id, or the project's path
  URL-encoded) with ``source_branch``, ``target_branch``, ``title``, ``description``;
  ``PRIVATE-TOKEN: <token>``; answers ``web_url`` and ``iid``.
- Gitea: ``POST {api}/repos/{owner}/{repo}/pulls`` with ``head``, ``base``, ``title``,
  ``body``; ``Authorization: token <token>``; answers ``html_url`` and ``number``.

The token goes to the configured API URL only: https, no redirects followed.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from bpfleet_core.proposals import PullRequest
from bpfleet_core.resources import Forge

TIMEOUT_SECONDS = 30.0
GITHUB_API_VERSION = "2022-11-28"


class ForgeError(Exception):
    """The forge refused or could not be reached; the message says which (its words)."""


@dataclass(frozen=True)
class Change:
    """The pull request to open: ``head`` into ``base``."""

    head: str
    base: str
    title: str
    body: str


def _request(forge: Forge, token: str, change: Change) -> tuple[str, dict[str, str], Any]:
    """(path, headers, JSON body) of the forge's "create" call."""
    if forge.type == "gitlab":
        return (
            f"/projects/{quote(forge.repository, safe='')}/merge_requests",
            {"PRIVATE-TOKEN": token},
            {
                "source_branch": change.head,
                "target_branch": change.base,
                "title": change.title,
                "description": change.body,
            },
        )
    owner, name = forge.repository.split("/")
    path = f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}/pulls"
    body = {"title": change.title, "head": change.head, "base": change.base, "body": change.body}
    if forge.type == "github":
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
    else:
        headers = {"Authorization": f"token {token}", "Accept": "application/json"}
    return path, headers, body


def open_pull_request(
    forge: Forge,
    token: str,
    change: Change,
    *,
    ca: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> PullRequest:
    """Open the pull request; ``ForgeError`` saying why it was not."""
    if "\n" in token or not token:
        raise ForgeError("the forge token is empty or not one line")
    path, headers, body = _request(forge, token, change)
    verify: ssl.SSLContext | bool = True
    if ca is not None:
        verify = ssl.create_default_context(cadata=ca)
    try:
        with httpx.Client(
            base_url=forge.api_url.rstrip("/"),
            timeout=TIMEOUT_SECONDS,
            verify=verify,
            follow_redirects=False,
            transport=transport,
        ) as client:
            response = client.post(path, headers=headers, json=body)
    except httpx.HTTPError as error:
        raise ForgeError(f"{forge.type} at {forge.api_url} unreachable: {error}") from None
    if response.status_code != 201 and not response.is_success:
        raise ForgeError(
            f"{forge.type} refused the pull request: {response.status_code} {_said(response)}"
        )
    try:
        answer = response.json()
        url = str(answer["web_url" if forge.type == "gitlab" else "html_url"])
        number = int(answer["iid" if forge.type == "gitlab" else "number"])
    except (ValueError, KeyError, TypeError):
        raise ForgeError(f"{forge.type} answered what is no pull request") from None
    if not url.startswith(("https://", "http://")):
        raise ForgeError(f"{forge.type} answered a pull request without a web address")
    return PullRequest(forge=forge.type, url=url[:2048], number=number)


def _said(response: httpx.Response) -> str:
    """The forge's own reason, on one line."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text[:300].split()) or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "error", "errors"):
            if key in body:
                return " ".join(str(body[key])[:300].split())
    return " ".join(str(body)[:300].split())
