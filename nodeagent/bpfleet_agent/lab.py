"""A policy lab on this host: a topology's pods as network namespaces, policed by the
real ``netpol`` datapath, probed with real TCP connections and UDP exchanges.

Layout (nothing touches the host's own network namespace or interfaces)::

    pod netns (x/a: 10.0.1.1/32 on eth0) --veth-- node netns (lh0) --/32 routes-- lh1 ...

Every pod has one veth whose host side (``lh<i>``) sits in a dedicated "node"
namespace that routes between pods with a /32 route per pod. Neighbour entries are
static on both sides (fixed MACs), so no ARP or proxy-ARP delay ever slows a probe.
``netpol`` is attached to both tc hooks of every ``lh<i>``, exactly as on a node.

One process serves every pod: a socket belongs to the namespace it was created in, so
the lab creates servers (TCP and UDP, each port) and probe clients by entering each
namespace just for ``socket()``, then drives them all from one selector. A 9x9 matrix
takes about one probe timeout.

Namespaces are named ``bpfl-lab-<pid>-...`` and pins live under
``/sys/fs/bpf/bpfleet-lab-<pid>-...``, so ``clean_stale`` can remove what a killed run
left behind without touching a running one.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Literal

from bpfleet_agent import datapath, libc, loading, mounts, probing
from bpfleet_agent.settings import AgentSettings
from bpfleet_core import features, signing
from bpfleet_core.netpol.rules import EndpointRules
from bpfleet_core.resources import ArtifactRef

log = logging.getLogger(__name__)

Protocol = Literal["TCP", "UDP", "SCTP"]
Matrix = dict[str, dict[str, bool]]

SERVED_PORTS = (80, 81)
PROBE_TIMEOUT = 1.5  # seconds; a dropped SYN is retried by the kernel after 1 s
_UDP_RESEND = 0.25
_PAYLOAD = b"bpfleet-lab-probe"
_GATEWAY = "169.254.1.1"  # the pods' next hop: link-local, answered by a static entry
_NETNS_DIR = Path("/var/run/netns")
_BPFFS = Path("/sys/fs/bpf")
_PREFIX = "bpfl-lab-"
_NAME = re.compile(rf"^{_PREFIX}(\d+)-")


class LabError(Exception):
    """The lab could not be built or used; the message says why."""


class ProtocolUnavailable(LabError):
    """This kernel cannot open sockets of the protocol, so it cannot be probed."""


def check_protocol(protocol: str) -> None:
    """Raise ``ProtocolUnavailable`` unless this kernel has sockets for ``protocol``."""
    kinds = {
        "TCP": (socket.SOCK_STREAM, socket.IPPROTO_TCP),
        "UDP": (socket.SOCK_DGRAM, socket.IPPROTO_UDP),
        "SCTP": (socket.SOCK_STREAM, 132),  # IPPROTO_SCTP
    }
    if protocol not in kinds:
        raise ProtocolUnavailable(f"unknown protocol {protocol!r}: TCP, UDP or SCTP")
    kind, number = kinds[protocol]
    try:
        socket.socket(socket.AF_INET, kind, number).close()
    except OSError as error:
        raise ProtocolUnavailable(
            f"this kernel has no {protocol} sockets ({error.strerror}): "
            f"{protocol} cannot be probed for real here"
        ) from error


# ------------------------------------------------------------------ namespaces


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Run the block with this thread in ``netns`` (setns is per thread), then return.

    The way back is in a ``finally`` that also covers the way in: an interrupt landing
    right after the first setns must not leave the thread in a pod's namespace.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(_NETNS_DIR / netns, os.O_RDONLY)
        try:
            libc.setns(target, libc.CLONE_NEWNET)
            yield
        finally:
            try:
                libc.setns(original, libc.CLONE_NEWNET)
            finally:
                os.close(target)
    finally:
        os.close(original)


def _ip_batch(commands: Sequence[str], netns: str | None = None) -> None:
    """Many ``ip`` commands in one process (``ip -batch``): building a 9-pod lab costs a
    dozen processes instead of a hundred."""
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    done = subprocess.run(
        argv, check=False, input="\n".join(commands) + "\n", capture_output=True, text=True
    )
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def _mac(kind: int, index: int) -> str:
    return f"02:b{kind}:00:00:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"


@dataclass(frozen=True)
class LabPod:
    key: str  # "<namespace>/<pod>"
    address: ipaddress.IPv4Address
    netns: str
    host_interface: str  # in the node namespace


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> list[str]:
    """Remove lab namespaces and pins whose process is gone; return what was removed."""
    removed: list[str] = []
    stale_netns = [
        path.name
        for path in (sorted(_NETNS_DIR.iterdir()) if _NETNS_DIR.is_dir() else [])
        if (match := _NAME.match(path.name)) and not _pid_alive(int(match.group(1)))
    ]
    if stale_netns:
        with contextlib.suppress(LabError):
            _ip_batch([f"netns del {name}" for name in stale_netns])
        removed += stale_netns
    for path in sorted(_BPFFS.glob("bpfleet-lab-*")) if _BPFFS.is_dir() else []:
        match = re.match(r"^bpfleet-lab-(\d+)-", path.name)
        if match and not _pid_alive(int(match.group(1))):
            _remove_pins(path)
            removed.append(str(path))
    return removed


def _remove_pins(pin_root: Path) -> None:
    kernel = loading.Kernel(pin_root, Path("/sys/kernel/tracing"), Path("/sys/fs/cgroup"))
    if pin_root.is_dir():
        for program in pin_root.iterdir():
            with contextlib.suppress(OSError):
                loading.remove(kernel, program.name)
    shutil.rmtree(pin_root, ignore_errors=True)


class Topology:
    """The namespaces, veths and routes of a set of pods; ``close()`` removes them all."""

    def __init__(self, pods: Mapping[str, ipaddress.IPv4Address | ipaddress.IPv6Address]) -> None:
        token = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.node_netns = f"{_PREFIX}{token}-node"
        self.pods: dict[str, LabPod] = {}
        for index, (key, address) in enumerate(pods.items()):
            if not isinstance(address, ipaddress.IPv4Address):
                raise LabError(f"pod {key}: the lab builds IPv4 pods only, not {address}")
            self.pods[key] = LabPod(key, address, f"{_PREFIX}{token}-p{index}", f"lh{index}")
        self._created: list[str] = []

    def build(self) -> None:
        names = [self.node_netns, *(pod.netns for pod in self.pods.values())]
        try:
            _ip_batch([f"netns add {name}" for name in names])
        finally:
            self._created = [name for name in names if (_NETNS_DIR / name).exists()]
        node_commands: list[str] = []
        for index, pod in enumerate(self.pods.values()):
            host_mac, pod_mac = _mac(0, index), _mac(1, index)
            node_commands += [
                f"link add {pod.host_interface} address {host_mac} type veth "
                f"peer name eth0 address {pod_mac} netns {pod.netns}",
                f"link set {pod.host_interface} up",
                f"route add {pod.address}/32 dev {pod.host_interface}",
                f"neigh replace {pod.address} lladdr {pod_mac} dev {pod.host_interface} "
                "nud permanent",
            ]
        _ip_batch(node_commands, self.node_netns)
        for index, pod in enumerate(self.pods.values()):
            _ip_batch(
                [
                    "link set lo up",
                    "link set eth0 up",
                    f"addr add {pod.address}/32 dev eth0",
                    f"route add {_GATEWAY} dev eth0 scope link",
                    f"route add default via {_GATEWAY} dev eth0",
                    f"neigh replace {_GATEWAY} lladdr {_mac(0, index)} dev eth0 nud permanent",
                ],
                pod.netns,
            )
        # The node routes between pods; nothing else there needs changing.
        subprocess.run(
            ["nsenter", f"--net={_NETNS_DIR / self.node_netns}", "sysctl", "-qw",
             "net.ipv4.ip_forward=1"],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def close(self) -> None:
        if self._created:
            with contextlib.suppress(LabError):
                _ip_batch([f"netns del {name}" for name in self._created])
            self._created = []


# ---------------------------------------------------------------------- servers


class Servers:
    """TCP and UDP echo servers on every pod's ports, all in one thread."""

    def __init__(self, pods: Sequence[LabPod], ports: Sequence[int] = SERVED_PORTS) -> None:
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        for pod in pods:
            with entered(pod.netns):
                for port in ports:
                    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    listener.bind((str(pod.address), port))
                    listener.listen(128)
                    datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    datagrams.bind((str(pod.address), port))
                    for server in (listener, datagrams):
                        server.setblocking(False)
                        self._sockets.append(server)
                    self._selector.register(listener, selectors.EVENT_READ, self._accept)
                    self._selector.register(datagrams, selectors.EVENT_READ, self._echo_datagram)
        self._thread = threading.Thread(target=self._serve, name="lab-servers", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                handler: Callable[[socket.socket], None] = key.data
                with contextlib.suppress(OSError):
                    handler(key.fileobj)  # type: ignore[arg-type]

    def _accept(self, listener: socket.socket) -> None:
        connection, _ = listener.accept()
        connection.setblocking(False)
        self._selector.register(connection, selectors.EVENT_READ, self._echo_stream)

    def _echo_stream(self, connection: socket.socket) -> None:
        try:
            data = connection.recv(4096)
            if data:
                connection.send(data)
        finally:
            self._selector.unregister(connection)
            connection.close()

    def _echo_datagram(self, server: socket.socket) -> None:
        data, peer = server.recvfrom(4096)
        server.sendto(data, peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()


# ---------------------------------------------------------------------- probes


@dataclass
class _Attempt:
    client: str
    server: str
    sock: socket.socket
    protocol: Protocol
    sent_at: float = 0.0
    connected: bool = False
    result: bool | None = None


def _start_attempt(
    client: str, server: str, address: str, port: int, protocol: Protocol
) -> _Attempt:
    if protocol == "TCP":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((address, port))
        attempt = _Attempt(client, server, sock, protocol)
        if code not in (0, errno.EINPROGRESS):
            attempt.result = False
        return attempt
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.connect((address, port))  # UDP: fixes the peer; only its replies are read
    attempt = _Attempt(client, server, sock, protocol, sent_at=time.monotonic())
    with contextlib.suppress(OSError):
        sock.send(_PAYLOAD)
    return attempt


def _advance(attempt: _Attempt, selector: selectors.BaseSelector, now: float) -> None:
    """One step of an attempt whose socket is ready."""
    sock = attempt.sock
    if attempt.protocol == "TCP" and not attempt.connected:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
            attempt.result = False  # refused or unreachable: nothing listens there
            return
        attempt.connected = True
        sock.send(_PAYLOAD)
        selector.modify(sock, selectors.EVENT_READ, attempt)
        return
    try:
        reply = sock.recv(4096)
    except BlockingIOError:
        return
    except OSError:
        attempt.result = False  # e.g. an ICMP error on the UDP socket
        return
    attempt.result = reply == _PAYLOAD


def probe_matrix(
    pods: Mapping[str, LabPod], protocol: Protocol, port: int, timeout: float = PROBE_TIMEOUT
) -> Matrix:
    """Every ordered pod pair at once; a pair is allowed if its echo came back in time."""
    check_protocol(protocol)
    if protocol == "SCTP":
        raise ProtocolUnavailable("SCTP probes are not implemented")
    matrix: Matrix = {client: {server: client == server for server in pods} for client in pods}
    selector = selectors.DefaultSelector()
    attempts: list[_Attempt] = []
    try:
        for client, pod in pods.items():
            with entered(pod.netns):
                for server, target in pods.items():
                    if server != client:
                        attempts.append(
                            _start_attempt(client, server, str(target.address), port, protocol)
                        )
        for attempt in attempts:
            if attempt.result is None:
                events = selectors.EVENT_WRITE if protocol == "TCP" else selectors.EVENT_READ
                selector.register(attempt.sock, events, attempt)
        deadline = time.monotonic() + timeout
        while (now := time.monotonic()) < deadline:
            pending = [a for a in attempts if a.result is None]
            if not pending:
                break
            for key, _ in selector.select(timeout=min(_UDP_RESEND, deadline - now)):
                ready: _Attempt = key.data
                if ready.result is None:
                    _advance(ready, selector, now)
                if ready.result is not None:
                    selector.unregister(ready.sock)
            for attempt in pending:
                # Datagrams can be lost: send again until the deadline.
                if (
                    attempt.protocol == "UDP"
                    and attempt.result is None
                    and now - attempt.sent_at >= _UDP_RESEND
                ):
                    attempt.sent_at = now
                    with contextlib.suppress(OSError):
                        attempt.sock.send(_PAYLOAD)
    finally:
        selector.close()
        for attempt in attempts:
            attempt.sock.close()
    for attempt in attempts:
        matrix[attempt.client][attempt.server] = bool(attempt.result)
    return matrix


# ------------------------------------------------------------------------- lab


def node_features(settings: AgentSettings) -> features.FeatureReport:
    """The agent's cached feature report when it is for this kernel, else a real probe
    (the lab never writes the agent's state)."""
    with contextlib.suppress(OSError, ValueError):
        cached = features.FeatureReport.load(settings.features_file)
        if cached.kernel_release == os.uname().release:
            return cached
    mounts.ensure_bpffs(settings.pin_root)
    return probing.probe(
        settings.node_name, settings.pin_root, mounts.ensure_tracefs(), mounts.ensure_cgroup2()
    )


@dataclass
class ArtifactSource:
    """Where the signed ``netpol`` artifact comes from, and what this node can do."""

    artifact_dirs: Sequence[Path]
    trust: signing.TrustStore
    report: features.FeatureReport
    artifact: ArtifactRef = field(default_factory=lambda: datapath.ARTIFACT)


class PolicyLab:
    """Pods as namespaces, servers on their ports, the datapath on the node side.

    Use as a context manager: leaving it (also on an exception or a signal turned into
    one, see ``signals_raise``) removes namespaces, links and pins.
    """

    def __init__(
        self,
        pods: Mapping[str, ipaddress.IPv4Address | ipaddress.IPv6Address],
        source: ArtifactSource,
        ports: Sequence[int] = SERVED_PORTS,
    ) -> None:
        self.topology = Topology(pods)
        self._source = source
        self._ports = ports
        self.pin_root = _BPFFS / f"bpfleet-lab-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._servers: Servers | None = None
        self.datapath: datapath.PolicyDatapath | None = None

    @property
    def pods(self) -> dict[str, LabPod]:
        return self.topology.pods

    def __enter__(self) -> PolicyLab:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _open(self) -> None:
        clean_stale()
        self.topology.build()
        self._servers = Servers(list(self.pods.values()), self._ports)
        mounts.ensure_bpffs(self.pin_root)
        kernel = loading.Kernel(
            self.pin_root,
            mounts.find("tracefs") or Path("/sys/kernel/tracing"),
            mounts.find("cgroup2") or Path("/sys/fs/cgroup"),
        )
        interfaces = [pod.host_interface for pod in self.pods.values()]
        desired = datapath.prepare(
            interfaces,
            artifact_dirs=self._source.artifact_dirs,
            trust=self._source.trust,
            report=self._source.report,
            artifact=self._source.artifact,
        )
        self.datapath = datapath.PolicyDatapath(kernel, desired)
        with entered(self.topology.node_netns):  # interface names resolve there
            self.datapath.start()

    def enforce(
        self, rules: Mapping[str, EndpointRules] | Sequence[EndpointRules]
    ) -> datapath.Applied:
        """Swap in these rules and forget tracked flows, so no probe inherits a verdict
        from a flow of an earlier rule set that happened to reuse its ports."""
        assert self.datapath is not None
        endpoints = list(rules.values()) if isinstance(rules, Mapping) else list(rules)
        applied = self.datapath.apply(endpoints)
        self.datapath.flush_flows()
        return applied

    def probe(self, protocol: Protocol, port: int, timeout: float = PROBE_TIMEOUT) -> Matrix:
        return probe_matrix(self.pods, protocol, port, timeout)

    def close(self) -> None:
        """Remove everything. Stop signals wait until it is done (a second Ctrl-C must
        not leave half a lab), and every step runs even if an earlier one fails; the
        first failure is raised at the end."""
        with _signals_deferred():
            self._close()

    def _close(self) -> None:
        steps: list[Callable[[], None]] = []
        if self._servers is not None:
            steps.append(self._servers.close)
        if self.datapath is not None:
            steps.append(self.datapath.close)
        steps += [self.topology.close, lambda: _remove_pins(self.pin_root)]
        self._servers = None
        self.datapath = None
        failure: BaseException | None = None
        for step in steps:
            try:
                step()
            except BaseException as error:  # cleanup must go on; the first failure is raised below
                log.warning("lab cleanup step failed: %r", error)
                failure = failure or error
        if failure is not None:
            raise failure


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold stop signals for the block, then raise KeyboardInterrupt if one came.

    Handlers are swapped rather than the signals masked: a signal that arrived just
    before the block is still waiting for its Python handler, which then is ours.
    Python handlers live in the main thread only; elsewhere the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def defer(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, defer) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(f"signal {received[0]} (held during cleanup)")


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt for the block (SIGINT already is),
    so ``finally`` clauses clean up when a run is stopped."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
