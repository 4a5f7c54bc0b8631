"""OpenSearch 2.x and 3.x as real targets: the same delivery, dead-letter and exactly-once
tests as Elasticsearch, against each test distribution of SHIPPER_OS_VERSIONS in turn."""

from __future__ import annotations

import pytest

from tests.integration import test_elasticsearch_sink as on_elasticsearch
from tests.integration.test_exactly_once import rollover_between_kills
from tests.support import KubeletDir, ShipperProcess, es_config, stream_name, write_lines

pytestmark = pytest.mark.opensearch


def test_engine_is_detected_and_gets_its_own_template(tmp_path, os_url, os_client):
    ds = stream_name()
    write_lines(KubeletDir(tmp_path), 0, 10)
    run = ShipperProcess(tmp_path, es_config(tmp_path, os_url, ds), once=True).start()
    assert run.wait(300) == 0, run.logs()[-3000:]
    [ready] = [r for r in run.log_records() if r.get("message") == "elasticsearch ready"]
    assert ready["engine"] == "opensearch" and ready["failure_store"] is False
    assert os_client.count(ds) == 10
    mapping = next(iter(os_client.request("GET", f"/{ds}/_mapping")[1].values()))["mappings"]
    assert mapping["properties"]["json"]["type"] == "flat_object"  # no `flattened` here
    assert mapping["properties"]["@timestamp"]["type"] == "date_nanos"
    template = os_client.request("GET", "/_index_template/shipper-" + ds)[1]
    body = template["index_templates"][0]["index_template"]
    assert "data_stream_options" not in body.get("template", {})


def test_100k_lines_become_100k_documents_with_fields_and_are_searchable(
    tmp_path, os_url, os_client
):
    on_elasticsearch.test_100k_lines_become_100k_documents_with_fields_and_are_searchable(
        tmp_path, os_url, os_client
    )


def test_rejected_document_goes_to_dead_letters_with_its_reason_and_the_rest_indexes(
    tmp_path, os_url, os_client
):
    on_elasticsearch.test_rejected_document_goes_to_dead_letters_with_its_reason_and_the_rest_indexes(
        tmp_path, os_url, os_client
    )


def test_rollover_between_sigkills_gives_exactly_once(tmp_path, os_url, os_client):
    rollover_between_kills(tmp_path, os_url, os_client, per_file=25_000)
