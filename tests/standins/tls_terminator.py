"""The operator's TLS terminator in front of the daemon's public listener, on 127.0.0.1, for the browser tests.

It listens on a port of its own and hands every connection to the listener's plain-http port: a TLS one (the
browser, on https://127.0.0.1:PORT) decrypted with a self-signed certificate made for 127.0.0.1, a plain one
(the Google stand-in's push notifications, which it delivers to https loopback addresses as plain http) as is.
The browser context is told to accept the self-signed certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import select
import socket
import ssl
import tempfile
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TLS_HANDSHAKE = 0x16


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


class TlsTerminator:
    def __init__(self, backend_port: int) -> None:
        self._backend_port = backend_port
        self._directory = tempfile.TemporaryDirectory(prefix="tls-")
        cert_file, key_file = _certificate(Path(self._directory.name))
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert_file, key_file)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="tls-terminator", daemon=True)

    def __enter__(self) -> TlsTerminator:
        self._accepting.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._listener.close()
        self._accepting.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._directory.cleanup()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), name="tls-connection", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        upstream: socket.socket | None = None
        try:
            first = client.recv(1, socket.MSG_PEEK)
            if not first:
                return
            if first[0] == TLS_HANDSHAKE:
                client = self._context.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self._backend_port), timeout=10)
            self._pipe(client, upstream)
        except (OSError, ssl.SSLError):
            pass
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        while not self._stopping.is_set():
            readable, _, _ = select.select([client, upstream], [], [], 0.2)
            if isinstance(client, ssl.SSLSocket) and client.pending():
                readable = list({*readable, client})
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                if not data:
                    return
                peers[sock].sendall(data)
