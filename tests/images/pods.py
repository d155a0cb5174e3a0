"""The chart's containers run from the built images with buildah, as a kubelet would run
them: the rendered command, environment (values, Secret and ConfigMap keys, the node's
name), volumes (Secrets, ConfigMaps and emptyDirs as files here, hostPaths where the
test says), user and capabilities. No Kubernetes and no container runtime: each runs
under `buildah run --isolation chroot`, in this host's network namespace or one a test
made (the only place a test changes what the chart says is the container's command,
to run a standalone mode or a one-off check).
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# What `buildah run` grants by default; a container that drops ALL gets none of them.
BUILDAH_DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)


@dataclass(frozen=True)
class Manifests:
    """Documents of `helm template`."""

    documents: list[dict[str, Any]]

    def find(self, kind: str, name_suffix: str) -> dict[str, Any]:
        found = [
            doc
            for doc in self.documents
            if doc["kind"] == kind and doc["metadata"]["name"].endswith(name_suffix)
        ]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
        return found[0]

    def data(self, kind: str, name: str) -> dict[str, bytes]:
        """A Secret's or ConfigMap's keys, as the files a volume of it would hold."""
        (doc,) = (d for d in self.documents if d["kind"] == kind and d["metadata"]["name"] == name)
        data = doc.get("data", {})
        if kind == "Secret":
            files = {key: base64.b64decode(value, validate=True) for key, value in data.items()}
        else:
            files = {key: str(value).encode() for key, value in data.items()}
        files.update({key: str(value).encode() for key, value in doc.get("stringData", {}).items()})
        return files


@dataclass(frozen=True)
class Mount:
    host: Path
    path: str
    read_only: bool


@dataclass(frozen=True)
class Container:
    """One container of a rendered workload, resolved into what `buildah run` takes."""

    image: str
    command: list[str]
    env: dict[str, str]
    mounts: list[Mount]
    user: str | None  # uid:gid, or None for the image's USER
    capabilities: frozenset[str] | None  # exactly these, or None for buildah's defaults
    hostname: str = field(default_factory=lambda: f"pod-{uuid.uuid4().hex[:8]}")

    def with_command(self, *command: str, **env: str) -> Container:
        return replace(self, command=list(command), env={**self.env, **env})


def container_of(
    manifests: Manifests,
    kind: str,
    component: str,
    scratch: Path,
    *,
    node_name: str = "node-0",
    host_paths: Mapping[str, Path] | None = None,
    image_prefix: str = "localhost/",
) -> Container:
    """The (only) container of the workload ``*-<component>``. Secret, ConfigMap and
    emptyDir volumes become directories under ``scratch``; every hostPath volume must be
    named in ``host_paths``, so no test touches a host path it did not choose."""
    workload = manifests.find(kind, f"-{component}")
    pod = workload["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    env: dict[str, str] = {}
    for item in spec.get("env", []):
        env[item["name"]] = _env_value(manifests, item, node_name)
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    mounts = []
    for mount in spec.get("volumeMounts", []):
        host = _volume_on_host(manifests, volumes[mount["name"]], scratch, host_paths or {})
        mounts.append(Mount(host, mount["mountPath"], bool(mount.get("readOnly"))))
    context = spec.get("securityContext", {})
    user = None
    if "runAsUser" in context:
        user = f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"
    capabilities = None
    wanted = context.get("capabilities", {})
    if "ALL" in wanted.get("drop", []):
        capabilities = frozenset(f"CAP_{name}" for name in wanted.get("add", []))
    return Container(
        image=image_prefix + spec["image"],
        command=list(spec["command"]),
        env=env,
        mounts=mounts,
        user=user,
        capabilities=capabilities,
    )


def _env_value(manifests: Manifests, item: dict[str, Any], node_name: str) -> str:
    if "value" in item:
        return str(item["value"])
    source = item["valueFrom"]
    if "fieldRef" in source:
        assert source["fieldRef"]["fieldPath"] == "spec.nodeName", source
        return node_name
    for reference, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
        if reference in source:
            ref = source[reference]
            return manifests.data(kind, ref["name"])[ref["key"]].decode()
    raise AssertionError(f"unsupported env source: {item}")


def _volume_on_host(
    manifests: Manifests, volume: dict[str, Any], scratch: Path, host_paths: Mapping[str, Path]
) -> Path:
    name: str = volume["name"]
    if "hostPath" in volume:
        assert name in host_paths, f"hostPath volume {name!r}: the test must say where it is"
        return host_paths[name]
    directory = scratch / name
    directory.mkdir(parents=True, exist_ok=True)
    if "emptyDir" in volume:
        directory.chmod(0o1777)  # as the kubelet makes it: writable by any uid
        return directory
    directory.chmod(0o755)
    if "secret" in volume:
        files, items = manifests.data("Secret", volume["secret"]["secretName"]), volume["secret"]
    else:
        files, items = manifests.data("ConfigMap", volume["configMap"]["name"]), volume["configMap"]
    chosen = {item["key"]: item["path"] for item in items.get("items", [])} or {k: k for k in files}
    for key, path in chosen.items():
        target = directory / path
        target.write_bytes(files[key])
        target.chmod(0o644)  # the kubelet's default mode for Secret and ConfigMap files
    return directory


def run_arguments(container: Container, extra_mounts: Sequence[Mount] = ()) -> list[str]:
    """`buildah run` options for the container (not the working container's name)."""
    arguments = ["--isolation", "chroot", "--hostname", container.hostname]
    if container.user is not None:
        arguments += ["--user", container.user]
    if container.capabilities is not None:
        arguments += [
            f"--cap-drop={name}"
            for name in BUILDAH_DEFAULT_CAPABILITIES
            if name not in container.capabilities
        ]
        arguments += [f"--cap-add={name}" for name in sorted(container.capabilities)]
    mounts = [*container.mounts, *extra_mounts]
    if any(mount.path == "/etc/hosts" for mount in mounts):
        arguments.append("--no-hosts")  # the test's, not one buildah writes
    for mount in mounts:
        arguments += ["--volume", f"{mount.host}:{mount.path}:{'ro' if mount.read_only else 'rw'}"]
    for name, value in container.env.items():
        arguments += ["--env", f"{name}={value}"]
    return arguments


@dataclass
class Running:
    """A container's command running under `buildah run`."""

    working_container: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _working_container(image: str) -> str:
    name = f"bpfleet-test-{uuid.uuid4().hex[:10]}"
    subprocess.run(
        ["buildah", "from", "--pull=never", "--quiet", "--name", name, image],
        check=True,
        capture_output=True,
    )
    return name


def _remove(working_container: str) -> None:
    subprocess.run(["buildah", "rm", working_container], check=False, capture_output=True)


def _command(
    container: Container,
    working_container: str,
    netns: str | None,
    extra_mounts: list[Mount],
    command: list[str] | None = None,
) -> list[str]:
    prefix = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
    return [
        *prefix,
        "buildah",
        "run",
        *run_arguments(container, extra_mounts),
        working_container,
        "--",
        *(command or container.command),
    ]


@contextlib.contextmanager
def running(
    container: Container,
    log: Path,
    *,
    netns: str | None = None,
    extra_mounts: list[Mount] | None = None,
) -> Iterator[Running]:
    """Start the container's command; on leaving, SIGTERM to it (SIGKILL after 20 s)."""
    name = _working_container(container.image)
    try:
        with log.open("wb") as output:
            process = subprocess.Popen(
                _command(container, name, netns, extra_mounts or []),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped whole
            )
        try:
            yield Running(name, process, log)
        finally:
            _stop(process)
    finally:
        _remove(name)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def run_once(
    container: Container,
    command: list[str],
    *,
    netns: str | None = None,
    extra_mounts: list[Mount] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a fresh working container of the same image, with the same
    environment, volumes, user, capabilities and hostname, and wait for it."""
    name = _working_container(container.image)
    try:
        return subprocess.run(
            _command(container, name, netns, extra_mounts or [], command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        _remove(name)
