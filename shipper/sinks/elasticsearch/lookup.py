"""The uncertain range: documents that may already be indexed, checked before re-sending.

A deterministic `_id` with `op_type: create` is answered 409 only by the index holding the
first copy; after a rollover the re-sent document would land in the new write index as a
second copy. So a document that may already have been indexed (re-read after a restart
between the committed offset and the persisted "sent up to" mark, or in a request that
timed out or lost its connection) is first looked for in the whole target: every backing
index of the data stream, or every index the dated pattern matches. One refresh and one
`ids` search per bulk request that holds such documents; documents outside the uncertain
range never pay for it. With routing, each document is looked for in the stream its
action names.
"""

from __future__ import annotations

import orjson

from shipper.sinks.elasticsearch.client import Client

IDS_PER_SEARCH = 5_000  # two copies of each still fit index.max_result_window (10,000)
LENIENT = {"ignore_unavailable": "true", "allow_no_indices": "true"}


def entry_target(entry: bytes) -> tuple[str | None, str | None]:
    """The `_index` (None: the request's default target) and `_id` of a bulk entry."""
    action = orjson.loads(entry[: entry.index(b"\n")])
    meta = next(iter(action.values()), None)
    if not isinstance(meta, dict):
        return None, None
    return meta.get("_index"), meta.get("_id")


async def already_indexed(client: Client, target: str, ids: list[str]) -> set[str]:
    """Which of `ids` the target (all its backing indices) already holds."""
    if not ids:
        return set()
    # What an earlier attempt indexed a moment ago is not searchable before a refresh.
    await client.json("POST", f"/{target}/_refresh", params=LENIENT)
    found: set[str] = set()
    for start in range(0, len(ids), IDS_PER_SEARCH):
        chunk = ids[start : start + IDS_PER_SEARCH]
        answer = await client.json(
            "POST",
            f"/{target}/_search",
            {
                "query": {"ids": {"values": chunk}},
                "size": 2 * len(chunk),
                "_source": False,
                "track_total_hits": False,
                "sort": ["_doc"],
            },
            params={"filter_path": "hits.hits._id", **LENIENT},
        )
        found.update(hit["_id"] for hit in (answer.get("hits") or {}).get("hits", []))
    return found
