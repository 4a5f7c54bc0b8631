"""nginx terminating TLS with basic auth in front of an HTTP upstream (for TLS/auth tests)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.harness.elasticsearch import ES_USER, _es_user, free_port, make_traversable


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key)."""
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        str(key),
        "-out",
        str(cert),
        cwd=directory,
    )
    return cert, key


def make_server_cert(
    directory: Path, ca: tuple[Path, Path], address: str = "127.0.0.1"
) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, localhost (and `address`), signed by `ca`."""
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    extra = f",IP:{address}" if address != "127.0.0.1" else ""
    ext.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost{extra}\n")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        cwd=directory,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca[0]),
        "-CAkey",
        str(ca[1]),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
        cwd=directory,
    )
    return cert, key


class TlsProxy:
    """https://<address>:<port> -> upstream, requiring one basic-auth user."""

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        username: str,
        password: str,
        address: str = "127.0.0.1",
    ) -> None:
        if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
            raise RuntimeError("nginx is not installed (scripts/setup.sh installs it)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        ca = make_ca(workdir, "test-ca")
        self.ca_path = ca[0]
        self.wrong_ca_path = make_ca(workdir, "other-ca")[0]
        cert, key = make_server_cert(workdir, ca, address)
        hashed = subprocess.run(
            ["openssl", "passwd", "-apr1", password], check=True, capture_output=True, text=True
        ).stdout.strip()
        (workdir / "htpasswd").write_text(f"{username}:{hashed}\n")
        self.port = free_port()
        self.address = address
        self.url = f"https://{address}:{self.port}"
        user = f"user {ES_USER};" if _es_user() is not None else ""
        for name in ("client", "proxy", "fastcgi", "uwsgi", "scgi"):
            (workdir / f"tmp-{name}").mkdir(exist_ok=True)
        owner = _es_user()
        if owner is not None:
            os.chown(workdir, *owner)
            for path in workdir.iterdir():
                os.chown(path, *owner)
            make_traversable(workdir)
        (workdir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log {workdir}/access.log;
  client_body_temp_path {workdir}/tmp-client;
  proxy_temp_path {workdir}/tmp-proxy;
  fastcgi_temp_path {workdir}/tmp-fastcgi;
  uwsgi_temp_path {workdir}/tmp-uwsgi;
  scgi_temp_path {workdir}/tmp-scgi;
  server {{
    listen {address}:{self.port} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    client_max_body_size 200m;
    location / {{
      auth_basic "elasticsearch";
      auth_basic_user_file {workdir}/htpasswd;
      proxy_pass {upstream.rstrip("/")};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self._proc = subprocess.Popen(
            [nginx, "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "stderr.log", "wb"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("nginx exited: " + (workdir / "stderr.log").read_text())
            with socket.socket() as s:
                if s.connect_ex((address, self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("nginx did not start listening")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGQUIT)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
