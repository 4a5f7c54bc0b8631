"""The floor: the least a Python shipper can do per line, for comparison with shipper.

Reads whole files, splits lines, cuts the CRI header by position, serialises each message
with orjson, splices a pre-serialised metadata fragment and an id, and POSTs ~5 MB bulk
bodies to the endpoint. No partials, no checkpoints, no acknowledgement tracking, no
metrics, no validation of the line format.

    python -m bench.floor URL FILE...
"""

from __future__ import annotations

import http.client
import sys
from urllib.parse import urlsplit

import orjson

LIMIT = 5 << 20


def main() -> None:
    url = urlsplit(sys.argv[1])
    conn = http.client.HTTPConnection(url.hostname, url.port)
    dumps = orjson.dumps
    meta = b',"kubernetes":{"namespace":"shop","pod":{"name":"web"}},"host":{"name":"node-1"}}\n'
    body: list[bytes] = []
    size = 0
    lines = 0

    def post() -> None:
        conn.request(
            "POST",
            "/logs-floor-default/_bulk",
            body=b"".join(body),
            headers={"Content-Type": "application/x-ndjson"},
        )
        response = conn.getresponse()
        orjson.loads(response.read())

    for path in sys.argv[2:]:
        with open(path, "rb") as fh:
            data = fh.read()
        for offset, line in enumerate(data.split(b"\n")):
            if not line:
                continue
            time, _, rest = line.partition(b" ")
            stream, _, rest = rest.partition(b" ")
            _, _, message = rest.partition(b" ")
            doc = b'{"create":{"_id":"%x"}}\n{"@timestamp":"%s","message":%s,"stream":"%s"%s' % (
                offset,
                time,
                dumps(message.decode()),
                stream,
                meta,
            )
            body.append(doc)
            size += len(doc)
            lines += 1
            if size >= LIMIT:
                post()
                body, size = [], 0
    if body:
        post()
    print(lines)


if __name__ == "__main__":
    main()
