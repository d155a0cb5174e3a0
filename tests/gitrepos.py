"""A real Git repository for the GitOps tests: write, commit, delete, revert."""

from __future__ import annotations

import base64
import ipaddress
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

AUTHOR = ["-c", "user.name=bpfleet tests", "-c", "user.email=tests@bpfleet.invalid"]


class GitRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(self.path), *AUTHOR, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def commit(
        self,
        message: str,
        files: dict[str, str | bytes] | None = None,
        remove: tuple[str, ...] = (),
    ) -> str:
        for name, content in (files or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
            self.git("add", name)
        for name in remove:
            self.git("rm", "--quiet", name)
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.head()

    def revert(self, commit: str) -> str:
        self.git("revert", "--no-edit", commit)
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")


def self_signed_certificate(directory: Path) -> tuple[Path, Path, str]:
    """A key and certificate for 127.0.0.1 and localhost (PEM files), and the
    certificate's text: the CA a client must trust to reach the server."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bpfleet tests")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    key_file, certificate_file = directory / "server.key", directory / "server.crt"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    certificate_file.write_text(pem)
    return key_file, certificate_file, pem


class SmartHttpServer:
    """Git's own smart-HTTP server (``git http-backend``) behind Basic authentication,
    over TLS with a certificate of its own (``ca``) unless ``tls`` is off.

    ``authorizations`` records the Authorization header of every request (None when
    absent); ``on_request`` runs first on each, while the client waits for the answer;
    ``redirect`` sends every request elsewhere (a base URL) instead of serving it."""

    def __init__(
        self,
        root: Path,
        username: str,
        password: str,
        *,
        tls: bool = True,
        on_request: Callable[[], None] | None = None,
        redirect: str | None = None,
    ) -> None:
        expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.authorizations: list[str | None] = []
        self.ca = ""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                server.authorizations.append(self.headers.get("Authorization"))
                if on_request is not None:
                    on_request()
                if redirect is not None:
                    self.send_response(301)
                    self.send_header("Location", redirect + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                environment = {
                    "GIT_PROJECT_ROOT": str(root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": username,
                    "PATH": "/usr/bin:/bin",
                }
                done = subprocess.run(
                    ["git", "http-backend"],
                    input=body,
                    env=environment,
                    capture_output=True,
                    check=False,
                )
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode().split("\r\n"):
                    key, _, value = line.partition(": ")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls:
            scratch = Path(tempfile.mkdtemp(prefix="bpfleet-tls-"))
            key_file, certificate_file, self.ca = self_signed_certificate(scratch)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate_file, key_file)
            shutil.rmtree(scratch)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def url(self, repository: str) -> str:
        return f"{self.base}/{repository}"

    def __enter__(self) -> SmartHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class SshServer:
    """OpenSSH's sshd on a loopback port, for Git over SSH: one client key authorised,
    a host key of its own (so known_hosts is checked for real)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = _free_port()
        work.mkdir(parents=True, exist_ok=True)
        for name in ("host", "client"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)],
                check=True,
            )
        (work / "authorized_keys").write_text((work / "client.pub").read_text())
        config = work / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {work / 'host'}\n"
            f"AuthorizedKeysFile {work / 'authorized_keys'}\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "StrictModes no\nUsePAM no\nPidFile none\n"
        )
        self._config = config
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def identity(self) -> str:
        return (self.work / "client").read_text()

    @property
    def known_hosts(self) -> str:
        key = (self.work / "host.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n"

    def url(self, repository: Path) -> str:
        return f"ssh://root@127.0.0.1:{self.port}{repository}"

    def __enter__(self) -> SshServer:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        self._process = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(self._config)],
            stdout=subprocess.DEVNULL,
            stderr=(self.work / "sshd.log").open("wb"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.work / 'sshd.log').read_text()}")

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
