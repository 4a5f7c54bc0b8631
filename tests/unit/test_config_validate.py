"""validate(): what `shipper run` would refuse, `shipper check-config` refuses first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipper.cli import main
from shipper.config import ConfigError, parse_config, validate

ES = "elasticsearch:\n  hosts: ['https://es:9200']\n"
NO_KUBE = "kubernetes:\n  enabled: false\n"

# (config text, what the one-line error says); each without anything the machine provides.
CONFIG_MISTAKES = [
    # the three the issue names
    (
        ES + "  password: hunter2\n",
        "elasticsearch.username: empty while a password is set; expected the user",
    ),
    (
        "kubernetes:\n  enabled: true\n  node_name: ''\n",
        "kubernetes.node_name: empty while kubernetes.enabled is true; expected this node's name",
    ),
    ("parsing: false\n", "parsing: expected a mapping of keys, got False"),
    # sections, lists and mappings of the wrong shape
    ("limits:\n  namespaces: [batch]\n", "limits.namespaces: expected a mapping of names"),
    ("redaction:\n  rules: {a: b}\n", "redaction.rules: expected a list of mappings"),
    ("redaction:\n  rules: [{name: x}]\n", "redaction.rules[0].pattern: must not be empty"),
    ("redaction:\n  rules: [{pattern: x, nme: y}]\n", "redaction.rules[0].nme: unknown key"),
    # credentials
    (ES + "  username: shipper\n", "elasticsearch.password_file: empty while elasticsearch.user"),
    (
        ES + "  username: u\n  password: p\n  password_file: /f\n",
        "elasticsearch.password_file: set together with elasticsearch.password",
    ),
    (
        ES + "  api_key: k\n  api_key_file: /f\n",
        "elasticsearch.api_key_file: set together with elasticsearch.api_key",
    ),
    (
        ES + "  username: u\n  password_file: /p\n  api_key_file: /k\n",
        "elasticsearch.api_key: set together with a password",
    ),
    # TLS and hosts
    (
        ES + "  tls:\n    key_file: /k.pem\n",
        "elasticsearch.tls.key_file: '/k.pem' without elasticsearch.tls.cert_file",
    ),
    (
        "elasticsearch:\n  hosts: ['http://es:9200']\n  tls:\n    ca_file: /ca.pem\n",
        "elasticsearch.tls.ca_file: set while elasticsearch.hosts has 'http://es:9200'",
    ),
    ("elasticsearch:\n  hosts: ['http://es']\n", "expected URLs with a port, like http://"),
    ("elasticsearch:\n  hosts: ['https://es:99999']\n", "expected URLs with a port from 1 to"),
    # targets and routing
    ("elasticsearch:\n  data_stream: .ds-logs\n", "'.ds-logs' is not accepted; expected an"),
    ("elasticsearch:\n  data_stream: '..'\n", "elasticsearch.data_stream: '..' is not accepted"),
    (f"elasticsearch:\n  index: logs-{'x' * 260}\n", "elasticsearch.index: 'logs-xxxxxx"),
    (
        "routing:\n  per_namespace: true\nelasticsearch:\n  index: logs-%Y.%m.%d\n",
        "routing.per_namespace: true while elasticsearch.index is set ('logs-%Y.%m.%d')",
    ),
    (
        "routing:\n  dataset_annotation: true\nelasticsearch:\n  data_stream: my-app-logs-prod\n",
        "elasticsearch.data_stream: 'my-app-logs-prod' does not fit <type>-<dataset>-<namespace>",
    ),
    (
        "elasticsearch:\n  dead_letter_index: logs-kubernetes-default\n",
        "elasticsearch.dead_letter_index: 'logs-kubernetes-default' is among the documents' own",
    ),
    (
        "routing:\n  per_namespace: true\n"
        "elasticsearch:\n  dead_letter_index: logs-kubernetes-dl\n",
        "elasticsearch.dead_letter_index: 'logs-kubernetes-dl' is among the documents' own "
        "targets (logs-kubernetes-*)",
    ),
    # retries, multiline, kubernetes
    (
        "elasticsearch:\n  retry:\n    initial_backoff: 2m\n    max_backoff: 1m\n",
        "elasticsearch.retry.initial_backoff: 120s is longer than elasticsearch.retry.max_backoff",
    ),
    (
        "parsing:\n  multiline:\n    rule: java\n    continuation: '^\\s'\n",
        "parsing.multiline.continuation: set together with parsing.multiline.rule ('java')",
    ),
    (
        "parsing:\n  multiline:\n    start: '^\\d'\n",
        "parsing.multiline.start: '^\\\\d' without parsing.multiline.continuation",
    ),
    (
        "kubernetes:\n  pods_file: /p.json\n  kubeconfig: /k\n",
        "kubernetes.kubeconfig: set together with kubernetes.pods_file",
    ),
    # limits
    ("limits:\n  burst_lines: 100\n", "limits.burst_lines: 100 without a limit on lines"),
    (
        "limits:\n  namespaces:\n    batch:\n      burst_bytes: 1MiB\n",
        "limits.namespaces.batch.burst_bytes: 1048576 without a limit on bytes",
    ),
    (
        "limits:\n  namespaces:\n    Batch_Jobs: {}\n",
        "limits.namespaces.Batch_Jobs: 'Batch_Jobs' is",
    ),
    ("limits:\n  lines_per_second: -1\n", "limits.lines_per_second: -1 is too small"),
    ("limits:\n  namespaces:\n    b:\n      lines_per_second: x\n", "namespaces.b.lines_per_sec"),
    # redaction
    (
        "redaction:\n  rules:\n    - {name: a, pattern: x}\n    - {name: a, pattern: y}\n",
        "redaction.rules[1].name: 'a' names two rules",
    ),
    (
        "redaction:\n  rules:\n    - {name: a, pattern: 'x*'}\n",
        "redaction.rules[0].pattern: 'x*' matches empty text",
    ),
    (
        "redaction:\n  rules:\n    - {name: a, pattern: '(x)y', replacement: '\\2'}\n",
        "redaction.rules[0].replacement: '\\\\2' is not accepted; expected text with \\1-style",
    ),
    (
        "redaction:\n  rules:\n    - {name: a, pattern: '(x'}\n",
        "redaction.rules[0].pattern: '(x' is not accepted; expected a valid regular expression",
    ),
    ("redaction:\n  marker: ''\n", "redaction.marker: must not be empty"),
]


def check_config(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["check-config", *args, str(path)])
    return result.exit_code, result.stderr


def run_processes(tmp_path: Path, texts: list[str], env: dict[str, str]) -> list[tuple[int, str]]:
    """`shipper run --once --config FILE` for each text, as real processes, a few at a time."""
    out = []
    for start in range(0, len(texts), 4):
        procs = []
        for i, text in enumerate(texts[start : start + 4], start):
            path = tmp_path / f"run-{i}.yaml"
            path.write_text(text)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "shipper", "run", "--once", "--config", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, **env},
                )
            )
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            out.append((proc.returncode, err))
    return out


@pytest.mark.parametrize(("text", "message"), CONFIG_MISTAKES)
def test_config_mistake_is_refused_with_the_key_the_value_and_what_is_accepted(text, message):
    with pytest.raises(ConfigError) as info:
        validate(parse_config(text, {"NODE_NAME": "node-1"}), environment=False)
    assert message in str(info.value)


@pytest.mark.parametrize(("text", "message"), CONFIG_MISTAKES)
def test_check_config_refuses_with_exit_2_and_one_line(tmp_path, monkeypatch, text, message):
    monkeypatch.setenv("NODE_NAME", "node-1")
    code, err = check_config(tmp_path, text, "--config-only")
    assert (code, err.count("\n")) == (2, 1), err
    assert err.startswith("Error: ") and message in err


def test_run_refuses_them_the_same_way(tmp_path):
    # `run` and `check-config` share `_load`; real processes for the three the issue names
    # and every fourth of the rest keep this quick.
    sample = CONFIG_MISTAKES[:3] + CONFIG_MISTAKES[3::4]
    results = run_processes(tmp_path, [t for t, _ in sample], {"NODE_NAME": "node-1"})
    for (code, err), (_, message) in zip(results, sample, strict=True):
        assert (code, err.count("\n")) == (2, 1), err
        assert message in err


def test_sections_given_nothing_are_empty_sections_not_mistakes():
    cfg = parse_config("parsing:\nlimits:\n  namespaces:\nredaction:\n  rules:\n", {})
    assert cfg.parsing.level is True
    assert cfg.limits.namespaces == {} and cfg.redaction.rules == []


def test_consistent_configs_pass():
    cfg = parse_config(
        ES
        + "  username: shipper\n  password_file: /p\n  data_stream: logs-kubernetes-default\n"
        + "routing:\n  per_namespace: true\n  dataset_annotation: true\n"
        + "limits:\n  lines_per_second: 500\n  burst_lines: 2000\n  namespaces:\n"
        + "    batch:\n      burst_lines: 5000\n    'team-*':\n      bytes_per_second: 1MiB\n"
        + "redaction:\n  rules:\n"
        + "    - {name: sid, pattern: '(sid=)[0-9a-f]+', replacement: '\\1-'}\n",
        {"NODE_NAME": "node-1"},
    )
    validate(cfg, environment=False)
    assert cfg.limits.namespaces["batch"].burst_lines == 5000
    assert cfg.limits.namespaces["batch"].lines_per_second is None  # inherits 500
    assert cfg.limits.namespaces["team-*"].bytes_per_second == 1 << 20
    assert cfg.redaction.rules[0].replacement == "\\1-"


# ---- what the config needs on this machine ------------------------------------------------


def machine_mistakes(tmp: Path) -> list[tuple[str, str]]:
    (tmp / "empty").write_text("\n")
    (tmp / "not-a-cert.pem").write_text("hello\n")
    (tmp / "pods.json").write_text("{not json")
    basic = ES + "  username: shipper\n"
    return [
        (
            basic + f"  password_file: {tmp}/missing\n" + NO_KUBE,
            f"elasticsearch.password_file: cannot read '{tmp}/missing': No such file",
        ),
        (
            basic + f"  password_file: {tmp}/empty\n" + NO_KUBE,
            f"elasticsearch.password_file: '{tmp}/empty' is empty; expected the password in it",
        ),
        (
            ES + f"  api_key_file: {tmp}/empty\n" + NO_KUBE,
            "elasticsearch.api_key_file: '" + f"{tmp}/empty' is empty; expected the api key",
        ),
        (
            ES + f"  tls:\n    ca_file: {tmp}/not-a-cert.pem\n" + NO_KUBE,
            f"elasticsearch.tls.ca_file: '{tmp}/not-a-cert.pem' holds no usable certificate",
        ),
        (
            ES + f"  tls:\n    cert_file: {tmp}/not-a-cert.pem\n" + NO_KUBE,
            f"elasticsearch.tls.cert_file: '{tmp}/not-a-cert.pem' with no key_file is not a usable",
        ),
        (
            f"kubernetes:\n  pods_file: {tmp}/pods.json\n",
            f"kubernetes.pods_file: cannot read '{tmp}/pods.json'",
        ),
        (
            f"kubernetes:\n  node_name: n\n  kubeconfig: {tmp}/missing\n",
            f"kubernetes.kubeconfig: cannot use '{tmp}/missing'",
        ),
        (
            "kubernetes:\n  node_name: n\n",
            "kubernetes.enabled: not running in a cluster (no KUBERNETES_SERVICE_HOST)",
        ),
        (
            NO_KUBE + "metrics:\n  listen: no-such-host.invalid:2020\n",
            "metrics.listen: 'no-such-host.invalid:2020': 'no-such-host.invalid' does not resolve",
        ),
    ]


def test_what_the_config_needs_on_this_machine_is_checked_too(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for text, message in machine_mistakes(tmp_path):
        cfg = parse_config(text, {})
        validate(cfg, environment=False)  # the config alone is fine
        with pytest.raises(ConfigError) as info:
            validate(cfg)
        assert message in str(info.value), text
        code, err = check_config(tmp_path, text)
        assert (code, err.count("\n")) == (2, 1) and message in err, err
        assert check_config(tmp_path, text, "--config-only")[0] == 0
    mistakes = machine_mistakes(tmp_path)
    results = run_processes(tmp_path, [t for t, _ in mistakes], {})
    for (code, err), (_, message) in zip(results, mistakes, strict=True):
        assert code == 2 and message in err, err


def test_usable_files_pass(tmp_path):
    (tmp_path / "password").write_text("hunter2\n")
    (tmp_path / "pods.json").write_text('{"kind": "List", "items": []}')
    cfg = parse_config(
        ES
        + f"  username: shipper\n  password_file: {tmp_path}/password\n"
        + "  tls:\n    ca_file: /etc/ssl/certs/ca-certificates.crt\n"
        + f"kubernetes:\n  pods_file: {tmp_path}/pods.json\n"
        + "metrics:\n  listen: 127.0.0.1:0\n",
        {},
    )
    if not Path(cfg.elasticsearch.tls.ca_file).exists():
        pytest.skip("no system CA bundle")
    validate(cfg)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_client_certificate_and_key_are_loaded_together(tmp_path):
    cert, key, other = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "other.pem"
    for out in (key, other):
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(out)],
            check=True,
            capture_output=True,
        )  # fmt: skip
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-key", str(key), "-subj", "/CN=shipper", "-days",
         "1", "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls = f"  tls:\n    cert_file: {cert}\n    key_file: {{}}\n"
    validate(parse_config(ES + tls.format(key) + NO_KUBE, {}))
    with pytest.raises(ConfigError) as info:
        validate(parse_config(ES + tls.format(other) + NO_KUBE, {}))
    assert "elasticsearch.tls.cert_file:" in str(info.value)
    assert f"key_file '{other}' is not a usable client certificate" in str(info.value)
