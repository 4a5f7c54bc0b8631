"""The benchmark harness's pure parts: the endpoint's answers, Fluent Bit's inputs, the report."""

from pathlib import Path

import orjson
import pytest

from bench import fluentbit, loadgen, report, workers
from bench.endpoint import bulk_answer
from shipper.samples import write_tree
from shipper.sinks.elasticsearch.classify import FILTER_PATH


def answer(index: str, pattern: str | None, items: int) -> dict:
    head, item, tail = bulk_answer(index, pattern)
    return orjson.loads(head + b",".join([item] * items) + tail if item else head)


def test_bulk_answer_without_filter_path_is_elasticsearch_full_item():
    body = answer("fluent-bit", None, 2)
    assert list(body) == ["errors", "took", "items"]
    assert body["errors"] is False
    assert len(body["items"]) == 2
    created = body["items"][0]["create"]
    assert created["status"] == 201 and created["result"] == "created"
    assert created["_index"] == "fluent-bit" and "_shards" in created


def test_bulk_answer_through_shippers_filter_path_keeps_status_only():
    body = answer("logs-x", FILTER_PATH, 3)
    assert body == {"errors": False, "items": [{"create": {"status": 201}}] * 3}
    assert answer("logs-x", "errors", 3) == {"errors": False}


def test_mixed_workload_puts_one_pod_in_five_on_docker_across_kinds():
    containers = loadgen.mixed_containers(50)
    docker = [c for c in containers if c.fmt == "docker"]
    assert len(docker) == 10
    assert {c.kind for c in docker} == {"plain", "json", "java"}


def test_fluent_bit_gets_pods_without_shipper_hints_as_one_meta_file_each(tmp_path: Path):
    made = loadgen.mixed_tree(tmp_path / "tree", lines=100, pods=10)
    pods = fluentbit.without_hints(Path(made["pods_file"]), tmp_path / "pods.json")
    cache = fluentbit.preload_cache(pods, tmp_path / "meta")
    metas = sorted(p.name for p in cache.iterdir())
    expected = sorted(f"{c.namespace}_{c.pod}.meta" for c in made["containers"])
    assert metas == expected
    before = orjson.loads(Path(made["pods_file"]).read_bytes())["items"]
    assert any(k.startswith("shipper.io/") for i in before for k in i["metadata"]["annotations"])
    for path in cache.iterdir():
        pod = orjson.loads(path.read_bytes())
        assert pod["kind"] == "Pod"
        assert not [k for k in pod["metadata"]["annotations"] if k.startswith("shipper.io/")]
        assert pod["metadata"]["labels"]


def test_fluent_bit_config_tags_match_the_kubernetes_filter_prefix(tmp_path: Path):
    write_tree(tmp_path / "tree", lines_per_container=1)
    cfg = fluentbit.fb_config(tmp_path, tmp_path / "tree", "http://127.0.0.1:9299", tmp_path)
    text = cfg.read_text()
    links = tmp_path / "tree/var/log/containers"
    # in_tail's tag for `kube.*`: the path, slashes made dots, after `kube.`
    tag = "kube." + str(links / "x.log").lstrip("/").replace("/", ".")
    prefix = text.split("Kube_Tag_Prefix ", 1)[1].split("\n", 1)[0]
    assert tag.startswith(prefix) and tag[len(prefix) :] == "x.log"
    for setting in ("multiline.parser cri, docker", "Generate_ID On", "Write_Operation create"):
        assert setting in text
    plain = fluentbit.fb_config(tmp_path, tmp_path / "tree", "http://127.0.0.1:9299", None)
    assert "kubernetes" not in plain.read_text()


PARSE = {"parse_lines_per_cpu_second": 5.0, "parse_and_encode_lines_per_cpu_second": 4.0}


def test_report_says_when_fluent_bit_was_not_measured(tmp_path: Path):
    out = tmp_path / "b.md"
    report.write({"machine": "m", "command": "one", "parse": PARSE}, out)
    assert "Fluent Bit was not measured in this run" in out.read_text()


def test_partial_run_keeps_other_sections_and_the_analysis(tmp_path: Path):
    out = tmp_path / "b.md"
    report.write({"machine": "m", "command": "first", "parse": PARSE}, out)
    out.write_text(out.read_text() + "\n" + report.MARKER + "\nhand-written\n")
    row = {"cpu_s": 2.0, "lines_per_cpu_s": 5.0, "peak_rss_mib": 9.0, "bulk_bytes_per_line": 3.0}
    side = {
        "version": "Fluent Bit v5.1.1",
        "flags": "-DFLB_RELEASE=On",
        "rows": [{"case": "w", "lines": 10, "ratio": 2.0, "shipper": row, "fluent-bit": row}],
    }
    report.write({"machine": "m", "command": "second", "fluent-bit": side}, out)
    text = out.read_text()
    assert "CRI decode: 5 lines" in text
    assert "Kept from an earlier run (`first`): parse." in text
    assert "| w | 10 | 5 | 5 | 2.00 |" in text and "not measured" not in text
    assert text.endswith(report.MARKER + "\nhand-written\n")
    report.write({"machine": "m", "command": "third", "parse": PARSE}, out)
    assert "Fluent Bit v5.1.1" in out.read_text()  # kept, not replaced by "not measured"


def test_the_workers_section_gives_each_pairs_ratio_as_the_spread():
    row = {"lines": 10, "cpu_s": 1.0, "lines_per_wall_s": 5.0, "delivering_s": 1.5}
    rows = [{**row, "workers": 1, "wall_s": 2.0, "lines_per_delivering_s": 6.7}]
    rows.append({**row, "workers": 2, "wall_s": 1.2, "lines_per_delivering_s": 11.1})
    text = "\n".join(
        workers.report(
            {"rows": rows, "speedup": 1.67, "speedup_delivering": 1.66, "pair_speedups": [1.9, 1.6]}
        )
    )
    assert "1.67 times the lines per wall-second of one over the whole run, 1.66 times" in text
    assert "1.60 to 1.90 times" in text
    assert "Each pair" not in "\n".join(workers.report({"rows": rows, "speedup": 1.67}))


@pytest.mark.parametrize("native", [True, False], ids=["go", "python"])
def test_the_endpoints_answer_and_count_alike(native):
    """bench/endpoint_go (the workers' endpoint) gives shipper the answers bench/endpoint.py
    gives: the same bytes for a `_bulk` with and without shipper's filter_path, the same
    start-up calls, documents counted, and when the first and last `_bulk` were answered."""
    import urllib.request
    from urllib.parse import quote

    from bench.processes import endpoint, get_json

    def call(url: str, method: str, body: bytes | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(url, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    body = b'{"create":{"_id":"a"}}\n{"message":"x"}\n' * 3
    with endpoint(native=native) as url:
        assert get_json(url + "/_bench/stats")["first_at"] is None
        status, answer = call(f"{url}/logs-x/_bulk?filter_path={quote(FILTER_PATH)}", "POST", body)
        head, item, tail = bulk_answer("logs-x", FILTER_PATH)
        assert (status, answer) == (200, head + b",".join([item] * 3) + tail)
        first = get_json(url + "/_bench/stats")
        status, answer = call(f"{url}/logs-x/_bulk", "POST", body)
        head, item, tail = bulk_answer("logs-x", None)
        assert orjson.loads(answer) == orjson.loads(head + b",".join([item] * 3) + tail)
        assert call(f"{url}/_index_template/logs", "GET")[0] == 404
        assert call(f"{url}/_index_template/logs", "PUT", b"{}") == (200, b'{"acknowledged":true}')
        assert orjson.loads(call(f"{url}/", "GET")[1])["version"]["number"]
        stats = get_json(url + "/_bench/stats")
        assert (stats["documents"], stats["requests"], stats["bytes"]) == (6, 2, 2 * len(body))
        assert stats["first_at"] == first["first_at"] == first["last_at"] <= stats["last_at"]
        get_json(url + "/_bench/reset", "POST")
        stats = get_json(url + "/_bench/stats")
        assert (stats["documents"], stats["first_at"], stats["last_at"]) == (0, None, None)
