"""TLS and basic auth, through a real TLS-terminating nginx in front of Elasticsearch."""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.support import KubeletDir, ShipperProcess, cri, shipper_config

pytestmark = pytest.mark.elasticsearch

USER, PASSWORD = "shipper", f"pw-{uuid.uuid4().hex}"


def secrets_in(text: str) -> list[str]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return [s for s in (PASSWORD, token) if s in text]


def config_for(tmp_path, proxy_url: str, ca: str, password: str) -> dict:
    (tmp_path / "password").write_text(password + "\n")
    config = shipper_config(
        [str(tmp_path / "containers/*.log")], tmp_path / "cp", proxy_url, logging={"level": "debug"}
    )
    config["elasticsearch"].update(
        data_stream=f"logs-tls{uuid.uuid4().hex[:8]}-default",
        username=USER,
        password_file=str(tmp_path / "password"),
        tls={"ca_file": ca},
    )
    return config


@pytest.fixture
def proxy(es_url, tls_proxy_factory):
    return tls_proxy_factory(es_url, USER, PASSWORD)


@pytest.fixture
def logs(tmp_path):
    k = KubeletDir(tmp_path)
    k.write(b"".join(cri(i) for i in range(50)))
    return k


def test_right_ca_and_credentials_deliver_and_no_secret_is_logged(tmp_path, proxy, logs, es_client):
    config = config_for(tmp_path, proxy.url, str(proxy.ca_path), PASSWORD)
    run = ShipperProcess(tmp_path, config, once=True).start()
    assert run.wait(300) == 0, run.logs()[-2000:]
    assert es_client.count(config["elasticsearch"]["data_stream"]) == 50
    assert "debug" in run.logs()  # DEBUG logging really was on
    assert secrets_in(run.logs()) == []


def test_wrong_ca_fails_with_a_clear_error(tmp_path, proxy, logs):
    config = config_for(tmp_path, proxy.url, str(proxy.wrong_ca_path), PASSWORD)
    run = ShipperProcess(tmp_path, config, once=True).start()
    assert run.wait(120) == 1
    last = run.logs().strip().splitlines()[-1]
    assert "TLS verification of" in last and "certificate verify failed" in last
    assert "elasticsearch.tls.ca_file" in last
    assert secrets_in(run.logs()) == []


def test_wrong_password_fails_with_a_clear_error_and_never_shows_it(tmp_path, proxy, logs):
    config = config_for(tmp_path, proxy.url, str(proxy.ca_path), "not-the-password")
    run = ShipperProcess(tmp_path, config, once=True).start()
    assert run.wait(120) == 1
    last = run.logs().strip().splitlines()[-1]
    assert "refused the credentials (401" in last
    assert "not-the-password" not in run.logs()
    assert secrets_in(run.logs()) == []
