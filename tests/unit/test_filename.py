import pytest

from parsers import ContainerRef, NotAContainerLog, container_ref, parse_log_path

ID = "a" * 32 + "0123456789abcdef" * 2


def test_containers_link_name_gives_pod_namespace_container_and_id():
    ref = parse_log_path(f"/var/log/containers/web-7d4b9c-x2x.v2_shop_nginx-proxy-{ID}.log")
    assert ref == ContainerRef(
        namespace="shop", pod="web-7d4b9c-x2x.v2", container="nginx-proxy", container_id=ID
    )


def test_container_name_ending_in_hex_keeps_its_last_64_hex_as_id():
    ref = parse_log_path(f"/var/log/containers/p_ns_c-{'b' * 10}-{ID}.log")
    assert ref.container == f"c-{'b' * 10}"
    assert ref.container_id == ID


def test_pods_path_gives_uid_and_restart_number():
    uid = "0b8a5b8e-1d0c-4b6e-9a6f-4c2f0b1d2e3f"
    ref = parse_log_path(f"/var/log/pods/kube-system_coredns-5d78c9869d-abcde_{uid}/coredns/3.log")
    assert ref == ContainerRef(
        namespace="kube-system",
        pod="coredns-5d78c9869d-abcde",
        container="coredns",
        pod_uid=uid,
        restart=3,
    )


@pytest.mark.parametrize("suffix", [".20240301-102030", ".20240301-102030.gz"])
def test_rotated_pods_file_is_recognised_as_rotated(suffix):
    ref = parse_log_path(f"/var/log/pods/ns_pod_uid-1/app/0.log{suffix}")
    assert ref.rotated is True
    assert ref.restart == 0


@pytest.mark.parametrize(
    "path",
    [
        "/var/log/syslog",
        "/var/log/containers/nohex_ns_c-1234.log",
        f"/var/log/containers/Upper_ns_c-{ID}.log",
        f"/var/log/containers/pod_ns_c-{ID}.txt",
        "/var/log/pods/ns_pod/app/0.log",
        "/var/log/pods/ns_pod_uid/app/zero.log",
    ],
)
def test_other_names_are_not_container_logs(path):
    with pytest.raises(NotAContainerLog, match="not a container log"):
        parse_log_path(path)


def test_link_and_target_combine_into_one_reference():
    ref = container_ref(
        f"/var/log/containers/api-1_prod_app-{ID}.log", "/var/log/pods/prod_api-1_u-1/app/2.log"
    )
    assert ref == ContainerRef(
        namespace="prod", pod="api-1", container="app", container_id=ID, pod_uid="u-1", restart=2
    )


def test_unrelated_file_has_no_container_reference():
    assert container_ref("/tmp/app.log", "/tmp/app.log") is None
