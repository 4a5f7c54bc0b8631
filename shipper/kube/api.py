"""The Kubernetes API as the pod watch needs it: authenticated GETs, their answers streamed.

In a pod (the DaemonSet) the service account is all there is: the API server's address
from KUBERNETES_SERVICE_HOST/PORT, the token and the CA that the kubelet mounts. The
token is read again for every request, because the kubelet rotates bound tokens in place.
That takes no client library (the `kubernetes` package costs some 22 MiB of memory and a
third of a second to import); only a kubeconfig, which may name exec plugins and every
other way to authenticate, is read with the `kubernetes` package's own loader (shipper
tail on a laptop, or a daemon given `kubernetes.kubeconfig`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import ssl
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from shipper.config import ConfigError

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class ApiStatus(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, status: int, detail: bytes) -> None:
        super().__init__(f"HTTP {status}: {detail.decode(errors='replace')}")
        self.status = status
        self.reason = detail.decode(errors="replace")[:120]


@dataclass(frozen=True)
class Credentials:
    host: str
    port: int
    ca_file: str = ""
    verify: bool = True
    token: str = ""  # a fixed token (from a kubeconfig)
    token_file: str = ""  # read for every request (in a pod: rotated by the kubelet)
    cert_file: str = ""
    key_file: str = ""


class Response:
    """A streamed answer; `close` (or a shutdown of `sock` from another thread) ends it."""

    def __init__(self, conn: http.client.HTTPSConnection, raw: http.client.HTTPResponse):
        self.conn, self.raw, self.status = conn, raw, raw.status
        self.sock: socket.socket | None = conn.sock

    def read(self) -> bytes:
        return self.raw.read()

    def stream(self, size: int) -> Iterator[bytes]:
        while data := self.raw.read1(size):
            yield data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.raw.close()
            self.conn.close()


class KubeApi:
    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        c = credentials
        context = ssl.create_default_context(cafile=c.ca_file or None)
        if not c.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if c.cert_file:
            context.load_cert_chain(c.cert_file, c.key_file or None)
        self._context = context

    def get(self, path: str, params: dict[str, Any], read_timeout: float) -> Response:
        """GET `path` with `params` (empty ones left out); ApiStatus unless 2xx."""
        c = self.credentials
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v not in ("", None)})
        conn = http.client.HTTPSConnection(c.host, c.port, context=self._context, timeout=10)
        headers = {"Accept": "application/json"}
        token = self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request("GET", f"{path}?{query}" if query else path, headers=headers)
            if conn.sock is not None:
                conn.sock.settimeout(read_timeout)
            raw = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        response = Response(conn, raw)
        if not 200 <= raw.status < 300:
            detail = raw.read(300)
            response.close()
            raise ApiStatus(raw.status, detail)
        return response

    def _token(self) -> str:
        c = self.credentials
        if c.token_file:
            with open(c.token_file) as fh:
                return fh.read().strip()
        return c.token

    def close(self) -> None:
        return None


def in_cluster() -> KubeApi:
    """The pod's service account."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST", "")
    if not host:
        raise ConfigError(
            "kubernetes.enabled: not running in a cluster (no KUBERNETES_SERVICE_HOST); set "
            "kubernetes.kubeconfig, kubernetes.pods_file, or kubernetes.enabled: false"
        )
    token, ca = f"{ACCOUNT}/token", f"{ACCOUNT}/ca.crt"
    for path in (token, ca):
        if not os.path.isfile(path):
            raise ConfigError(
                f"kubernetes.enabled: in a cluster, but the service account is unusable "
                f"({path} is missing); mount its token (automountServiceAccountToken), or "
                "set kubernetes.kubeconfig"
            )
    port = int(os.environ.get("KUBERNETES_SERVICE_PORT", "443"))
    return KubeApi(Credentials(host.strip("[]"), port, ca_file=ca, token_file=token))


def from_kubeconfig(path: str) -> KubeApi:
    """A kubeconfig's current context, read by the `kubernetes` package's loader (exec
    plugins, inline certificates and the rest); ConfigError naming the file if unusable."""
    try:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=path, client_configuration=configuration)
    except Exception as exc:  # the loader raises many kinds
        raise ConfigError(f"kubernetes.kubeconfig: cannot use {path!r}: {exc}") from None
    url = urllib.parse.urlsplit(configuration.host)
    if url.scheme != "https":
        raise ConfigError(f"kubernetes.kubeconfig: {path!r}: the server must be https://")
    # "BearerToken" (client 35+) or "authorization" (older): "Bearer <token>" either way
    auth = next(iter((configuration.api_key or {}).values()), "")
    token = str(auth).removeprefix("Bearer ").strip()
    return KubeApi(
        Credentials(
            url.hostname or "",
            url.port or 443,
            ca_file=configuration.ssl_ca_cert or "",
            verify=bool(configuration.verify_ssl),
            token=token,
            cert_file=configuration.cert_file or "",
            key_file=configuration.key_file or "",
        )
    )
