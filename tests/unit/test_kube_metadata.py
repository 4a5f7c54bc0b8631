"""Pure logic of Kubernetes enrichment: pod objects to fields, keys, hints, the cache."""

import orjson
from hypothesis import given
from hypothesis import strategies as st

from parsers.filename import ContainerRef
from shipper.kube.cache import FIRST_LIST_WAIT, PodCache
from shipper.kube.keys import safe_key, safe_map
from shipper.kube.pods import container_fields, hints, workload
from shipper.limits import UNLIMITED, LimitOverride

CID = "a" * 64


def pod(
    name="web-7d4b9c6f5d-x2x9q",
    ns="shop",
    uid="u-1",
    labels=None,
    annotations=None,
    owner=("ReplicaSet", "web-7d4b9c6f5d"),
    node="node-1",
):
    labels = {"app": "web", "pod-template-hash": "7d4b9c6f5d"} if labels is None else labels
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": uid,
            "labels": labels,
            "annotations": annotations or {},
            "ownerReferences": [{"kind": owner[0], "name": owner[1], "controller": True}]
            if owner
            else [],
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.25"}]},
        "status": {
            "podIP": "10.0.0.7",
            "containerStatuses": [
                {
                    "name": "app",
                    "image": "docker.io/library/nginx:1.25",
                    "containerID": f"containerd://{CID}",
                }
            ],
        },
    }


def test_container_fields_carry_every_api_field():
    doc = container_fields(
        pod(annotations={"team": "a", "secret": "x"}), "app", {"env": "prod"}, ["team"], "node-1"
    )
    kube = doc["kubernetes"]
    assert kube["pod"] == {"name": "web-7d4b9c6f5d-x2x9q", "uid": "u-1", "ip": "10.0.0.7"}
    assert kube["namespace"] == "shop"
    assert kube["node"] == {"name": "node-1"}
    assert kube["labels"] == {"app": "web", "pod-template-hash": "7d4b9c6f5d"}
    assert kube["namespace_labels"] == {"env": "prod"}
    assert kube["annotations"] == {"team": "a"}  # only the allow-listed
    assert kube["deployment"] == {"name": "web"}
    assert kube["replicaset"] == {"name": "web-7d4b9c6f5d"}
    assert doc["container"] == {
        "id": CID,
        "runtime": "containerd",
        "image": {"name": "docker.io/library/nginx:1.25"},
    }
    assert doc["host"] == {"name": "node-1"}


def test_owning_workloads():
    assert workload(pod(owner=("StatefulSet", "db"))) == {"statefulset": {"name": "db"}}
    assert workload(pod(owner=("DaemonSet", "agent"))) == {"daemonset": {"name": "agent"}}
    assert workload(pod(owner=("Job", "report-28469120"))) == {
        "job": {"name": "report-28469120"},
        "cronjob": {"name": "report"},
    }
    assert workload(pod(owner=("Job", "migrate"))) == {"job": {"name": "migrate"}}
    assert workload(pod(owner=None)) == {}
    # a ReplicaSet not made by a Deployment (name does not end in the template hash)
    assert workload(pod(owner=("ReplicaSet", "legacy"))) == {"replicaset": {"name": "legacy"}}


def test_dotted_label_keys_become_siblings_not_objects():
    assert safe_key("app.kubernetes.io/name") == "app_kubernetes_io/name"
    labels = safe_map({"app": "x", "app.kubernetes.io/name": "y"})
    assert labels == {"app": "x", "app_kubernetes_io/name": "y"}


@given(st.dictionaries(st.text(min_size=1, max_size=30), st.text(max_size=10), max_size=20))
def test_safe_keys_never_contain_dots_so_no_key_is_a_prefix_path(labels):
    out = safe_map(labels)
    assert all("." not in k for k in out)
    assert len(out) <= len(labels)


def test_hints_for_the_pod_and_one_container():
    p = pod(
        annotations={
            "shipper.io/exclude-sidecar": "true",
            "shipper.io/parser": "json",
            "shipper.io/multiline": "java",
        }
    )
    assert hints(p, "app") == hints(p, "app").__class__(False, "json", "java")
    assert hints(p, "sidecar").excluded is True
    assert hints(pod(annotations={"shipper.io/exclude": "TRUE"}), "app").excluded is True


def ref(uid="u-1"):
    return ContainerRef("shop", "web-7d4b9c6f5d-x2x9q", "app", CID, uid, 0)


def test_handle_waits_for_an_unknown_pod_then_resolves_when_it_arrives():
    cache = PodCache(node="node-1", wait_for_metadata=2.0, synced=True)
    handle = cache.handle(ref(), now=100.0)
    assert not handle.resolved and handle.wait_until == 102.0
    assert orjson.loads(b"{" + handle.fragment + b"}")["kubernetes"]["pod"]["name"] == (
        "web-7d4b9c6f5d-x2x9q"
    )
    version = handle.version
    cache.put_pod(pod())
    assert handle.resolved
    assert handle.version == version + 1
    assert orjson.loads(b"{" + handle.fragment + b"}")["kubernetes"]["labels"]["app"] == "web"


def test_before_the_first_pod_list_lines_wait_longer_then_wait_for_metadata_from_the_list():
    cache = PodCache(node="node-1", wait_for_metadata=2.0)
    early = cache.handle(ref(), now=100.0)
    assert not early.resolved and early.wait_until == 100.0 + FIRST_LIST_WAIT
    other = ContainerRef("shop", "gone-0", "app", CID, "u-9", 0)
    unlisted = cache.handle(other, now=100.0)
    cache.replace_pods([pod()], now=0.0)
    cache.listed(now=105.0)
    assert early.resolved  # named by the list
    assert not unlisted.resolved and unlisted.wait_until == 107.0  # its event may come
    late = cache.handle(ContainerRef("shop", "new-0", "app", CID, "u-8", 0), now=110.0)
    assert late.wait_until == 112.0
    assert PodCache(node="n", wait_for_metadata=0.0).handle(ref(), now=1.0).wait_until == 1.0


def test_relabelled_pod_updates_the_fragment_of_open_files():
    cache = PodCache(node="node-1")
    cache.put_pod(pod())
    handle = cache.handle(ref(), now=0.0)
    cache.put_pod(pod(labels={"app": "web", "version": "2"}))
    labels = orjson.loads(b"{" + handle.fragment + b"}")["kubernetes"]["labels"]
    assert labels == {"app": "web", "version": "2"}


def test_deleted_pod_is_kept_for_the_grace_period():
    cache = PodCache(node="node-1", deleted_pod_grace=300)
    cache.put_pod(pod())
    cache.delete_pod(pod(), now=1000.0)
    cache.expire(1200.0)
    assert cache.handle(ref(), now=0.0).resolved
    cache.expire(1301.0)
    assert not cache.handle(ref(), now=0.0).resolved


def test_a_recreated_pod_with_the_same_name_is_not_mistaken_for_the_old_one():
    cache = PodCache(node="node-1")
    cache.put_pod(pod(uid="old"))
    handle = cache.handle(ref(uid="new"), now=0.0)
    assert not handle.resolved
    cache.put_pod(pod(uid="new"))
    assert handle.resolved


def test_namespace_labels_reach_open_files():
    cache = PodCache(node="node-1")
    cache.put_pod(pod())
    handle = cache.handle(ref(), now=0.0)
    cache.put_namespace({"metadata": {"name": "shop", "labels": {"team": "payments"}}})
    kube = orjson.loads(b"{" + handle.fragment + b"}")["kubernetes"]
    assert kube["namespace_labels"] == {"team": "payments"}


def test_lines_wait_for_namespace_labels_while_the_namespace_list_is_pending():
    cache = PodCache(node="node-1", wait_for_metadata=2.0, namespaces_pending=True, synced=True)
    cache.put_pod(pod())
    handle = cache.handle(ref(), now=100.0)
    assert not handle.resolved and handle.wait_until == 102.0
    assert "labels" in orjson.loads(b"{" + handle.fragment + b"}")["kubernetes"]
    cache.replace_namespaces([{"metadata": {"name": "shop", "labels": {"team": "payments"}}}])
    assert handle.resolved
    kube = orjson.loads(b"{" + handle.fragment + b"}")["kubernetes"]
    assert kube["namespace_labels"] == {"team": "payments"}


def test_a_pod_whose_namespace_is_not_listed_resolves_once_namespaces_are_synced():
    cache = PodCache(node="node-1", namespaces_pending=True)
    cache.put_pod(pod())
    handle = cache.handle(ref(), now=0.0)
    cache.replace_namespaces([{"metadata": {"name": "other"}}])
    assert handle.resolved
    assert "namespace_labels" not in orjson.loads(b"{" + handle.fragment + b"}")["kubernetes"]


# ---- service.* and the routing and rate-limit hints ----------------------------------------


def service_of(p, container="app"):
    return container_fields(p, container, None, [], "node-1").get("service")


def test_service_name_from_the_recommended_label_then_app_then_the_workload():
    labels = {
        "app.kubernetes.io/name": "shop-web",
        "app": "web",
        "app.kubernetes.io/version": "1.4.2",
    }
    assert service_of(pod(labels=labels)) == {"name": "shop-web", "version": "1.4.2"}
    assert service_of(pod(labels={"app": "web"})) == {"name": "web"}
    assert service_of(pod(labels={"pod-template-hash": "7d4b9c6f5d"})) == {
        "name": "web"
    }  # Deployment
    assert service_of(pod(labels={}, owner=("StatefulSet", "db"))) == {"name": "db"}
    assert service_of(pod(labels={}, owner=("Job", "report-28469120"))) == {"name": "report"}
    assert service_of(pod(labels={}, owner=None)) is None
    only_version = pod(labels={"app.kubernetes.io/version": "2"}, owner=None)
    assert service_of(only_version) == {"version": "2"}


def test_dataset_and_rate_limit_hints_for_the_pod_and_one_container():
    p = pod(
        annotations={
            "shipper.io/dataset": "nginx",
            "shipper.io/dataset-sidecar": "envoy",
            "shipper.io/rate-limit": "lines_per_second=100,bytes_per_second=64KiB",
            "shipper.io/rate-limit-sidecar": "off",
        }
    )
    app, sidecar = hints(p, "app"), hints(p, "sidecar")
    assert app.dataset == "nginx" and sidecar.dataset == "envoy"
    assert app.rate_limit == LimitOverride(lines_per_second=100, bytes_per_second=65536)
    assert sidecar.rate_limit == UNLIMITED
    assert app.problems == sidecar.problems == ()
    assert hints(pod(), "app").rate_limit is None


def test_an_unusable_rate_limit_annotation_is_ignored_and_said_why():
    h = hints(pod(annotations={"shipper.io/rate-limit-app": "lines=5"}), "app")
    assert h.rate_limit is None
    [problem] = h.problems
    assert problem.startswith("shipper.io/rate-limit-app: 'lines=5': expected off, or key=value")


def test_handles_carry_the_hints_and_follow_annotation_changes(caplog):
    cache = PodCache(node="node-1")
    handle = cache.handle(ref(), now=0.0)
    cache.put_pod(pod(annotations={"shipper.io/dataset": "nginx"}))
    assert (handle.dataset, handle.rate_limit, handle.hint_problems) == ("nginx", None, ())
    fragment = orjson.loads(b"{" + handle.fragment + b"}")
    assert fragment["service"] == {"name": "web"}
    bad = pod(annotations={"shipper.io/rate-limit": "fast"})
    with caplog.at_level("WARNING", logger="shipper.kube.cache"):
        cache.put_pod(bad)
        cache.put_pod(bad)  # the same problem again is not logged again
    assert handle.dataset == "" and handle.rate_limit is None
    assert handle.hint_problems and [r.message for r in caplog.records] == [
        "pod annotation ignored"
    ]
    cache.put_pod(pod(annotations={"shipper.io/rate-limit": "lines_per_second=5"}))
    assert handle.rate_limit == LimitOverride(lines_per_second=5) and handle.hint_problems == ()
