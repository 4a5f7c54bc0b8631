"""The Elasticsearch and OpenSearch sink, cut along its seams (Vector's sinks/elasticsearch
is the model):

- transport.py: HTTP/1.1 on asyncio, keep-alive pools, several hosts with dead-host
  backoff, TLS; wire.py: the messages (responses read, bodies written, gzip);
  client.py: the calls made over it (the injected seam for unit tests);
- startup.py: engine and version detection, templates (templates.py), fatal errors;
- classify.py: what a bulk answer means for each document (pure);
- outcomes.py: what follows from each answer for a batch's documents (accounted for,
  dead-lettered, split, retried);
- deadletter.py: rejected documents kept with their reason, one request per answer;
- lookup.py: the uncertain range checked against the whole target before re-sending;
- retries.py: backoff, the attempt limit, since when requests fail, rate-limited warnings;
- queue.py: batches waiting for a request slot and what each still owes;
- sink.py: the sink itself (start-up, requests, reloads, readiness).
"""

from typing import Any

__all__ = ["ElasticsearchSink", "SinkStartError"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `python -m shipper.sinks.elasticsearch.templates` does not
    # load the sink (and its templates module) before running the templates module.
    if name == "ElasticsearchSink":
        from shipper.sinks.elasticsearch.sink import ElasticsearchSink

        return ElasticsearchSink
    if name == "SinkStartError":
        from shipper.sinks.elasticsearch.startup import SinkStartError

        return SinkStartError
    raise AttributeError(name)
