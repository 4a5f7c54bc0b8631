"""Start-up: which engine and version answers, the index templates, and the errors that
retrying cannot fix (TLS verification, credentials, a refused template).

`GET /` says the engine (`"distribution": "opensearch"` on OpenSearch) and its version;
the Elasticsearch test distribution has no `GET /`, and `_nodes/_local` says the version
there (OpenSearch always has `GET /`). The engine decides the
template (OpenSearch has `flat_object` where Elasticsearch has `flattened`, and no
failure store) and whether rejected documents go to the failure store (Elasticsearch
9.1+ with a data stream) or to shipper's dead-letter index.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import orjson

from shipper.config import Elasticsearch
from shipper.sinks.elasticsearch.client import ApiError, Client
from shipper.sinks.elasticsearch.templates import (
    TEMPLATE_VERSION,
    dead_letter_template,
    document_template,
    target_patterns,
    template_name,
)
from shipper.sinks.elasticsearch.transport import TlsFailed

log = logging.getLogger(__name__)

ELASTICSEARCH = "elasticsearch"
OPENSEARCH = "opensearch"


class SinkStartError(RuntimeError):
    """The target can never be used as configured (TLS verification, credentials)."""


@dataclass(frozen=True, slots=True)
class Server:
    engine: str
    version: str

    def at_least(self, major: int, minor: int) -> bool:
        try:
            found = tuple(int(x) for x in re.findall(r"\d+", self.version)[:2])
        except ValueError:
            return False
        return found >= (major, minor)

    @property
    def has_failure_store(self) -> bool:
        return self.engine == ELASTICSEARCH and self.at_least(9, 1)


async def detect(client: Client) -> Server:
    """The engine and version of the cluster behind the configured hosts."""
    response = await client.transport.request("GET", "/", headers={"Accept": "application/json"})
    if response.status == 200:
        info = orjson.loads(response.body)
        version = info.get("version") or {}
        engine = OPENSEARCH if version.get("distribution") == OPENSEARCH else ELASTICSEARCH
        return Server(engine, str(version.get("number", "?")))
    if response.status not in (404, 405):
        raise ApiError(response.status, response.body, "GET", "/")
    # Distributions without the root endpoint (the test distribution) still say it here.
    nodes = await client.json("GET", "/_nodes/_local", params={"filter_path": "nodes.*.version"})
    version = str(next(iter((nodes.get("nodes") or {}).values()), {}).get("version", "?"))
    return Server(ELASTICSEARCH, version)  # OpenSearch always has `GET /`


async def install_templates(
    client: Client, cfg: Elasticsearch, server: Server, patterns: list[str] | None = None
) -> None:
    """The document and dead-letter templates, unless the same or a newer version is in
    (covering the same patterns: turning routing on widens the installed template).

    `patterns`: every stream routing may write to; None: the configured target."""
    target = cfg.index or cfg.data_stream
    ilm = cfg.ilm_policy
    if ilm and server.engine == OPENSEARCH:
        log.warning(
            "elasticsearch.ilm_policy is ignored on OpenSearch (attach an ISM policy instead)",
            extra={"ilm_policy": ilm},
        )
        ilm = ""
    wanted = {
        template_name(target): document_template(
            patterns or target_patterns(cfg.data_stream, cfg.index),
            data_stream=not cfg.index,
            failure_store=server.has_failure_store and not cfg.index,
            ilm_policy=ilm,
            engine=server.engine,
        ),
        template_name(cfg.dead_letter_index): dead_letter_template(cfg.dead_letter_index),
    }
    for name, body in wanted.items():
        found = await client.json("GET", f"/_index_template/{name}", missing_ok=True)
        installed, covered = -1, []
        if found:
            template = found["index_templates"][0]["index_template"]
            installed = template.get("version", 0)
            covered = template.get("index_patterns") or []
        newer = installed > TEMPLATE_VERSION
        if newer or (installed == TEMPLATE_VERSION and set(body["index_patterns"]) <= set(covered)):
            continue
        await client.json("PUT", f"/_index_template/{name}", body)
        log.info("index template installed", extra={"template": name, "version": TEMPLATE_VERSION})


def fatal_error(exc: BaseException, cfg: Elasticsearch) -> SinkStartError | None:
    """The one-line error that ends shipper, if retrying `exc` can never succeed."""
    if isinstance(exc, TlsFailed):
        return SinkStartError(
            f"TLS verification of {', '.join(cfg.hosts)} failed: {exc.reason}"
            " (check elasticsearch.tls.ca_file)"
        )
    refused = isinstance(exc, ApiError) and exc.status in (401, 403)
    if refused and exc.type != "cluster_block_exception":
        return SinkStartError(
            f"Elasticsearch refused the credentials ({exc.status} {exc.type}); check "
            "elasticsearch.username/password_file or api_key_file"
        )
    if isinstance(exc, ApiError) and exc.status == 400 and "_index_template" in exc.where:
        target = cfg.index or cfg.data_stream
        return SinkStartError(
            f"Elasticsearch refused shipper's index template for {target!r}: {exc.type}: "
            f"{exc.reason[:500]} (check elasticsearch.data_stream / index, or set "
            "install_template: false and manage it yourself)"
        )
    return None
