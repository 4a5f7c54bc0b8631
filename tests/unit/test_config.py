import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipper.config import (
    ConfigError,
    default_config,
    iter_keys,
    load_config,
    parse_config,
    render_example,
)

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_documents_every_key_with_its_default():
    text = (ROOT / "config.example.yaml").read_text()
    assert text == render_example(), "regenerate: python -m shipper.config > config.example.yaml"
    assert load_config(ROOT / "config.example.yaml") == default_config()
    for key, _, meta in iter_keys():
        assert f"{key.rsplit('.', 1)[-1]}:" in text
        assert meta["doc"], f"{key} has no description"


def test_environment_variables_are_substituted_with_defaults():
    cfg = parse_config(
        "elasticsearch:\n  hosts: ['${ES:-http://localhost:9200}']\n"
        "  username: ${USER_NAME}\nbuffer:\n  max_bytes: ${BUF:-32MiB}\n",
        {"USER_NAME": "shipper"},
    )
    assert cfg.elasticsearch.hosts == ["http://localhost:9200"]
    assert cfg.elasticsearch.username == "shipper"
    assert cfg.buffer.max_bytes == 32 * 1024 * 1024


def test_units_for_durations_and_sizes():
    cfg = parse_config(
        "checkpoint:\n  interval: 1m30s\n  forget_after: 2d\ninputs:\n"
        "  chunk_bytes: 512KiB\n  rotate_wait: 250ms\n",
        {},
    )
    assert cfg.checkpoint.interval == 90
    assert cfg.checkpoint.forget_after == 2 * 86400
    assert cfg.inputs.chunk_bytes == 512 * 1024
    assert cfg.inputs.rotate_wait == 0.25


MISTAKES = [
    # unknown key, with what would be accepted
    ("inputs:\n  pathz: []\n", "inputs.pathz: unknown key; accepted here: paths"),
    ("elastic: {}\n", "elastic: unknown key; accepted here: inputs"),
    # wrong type
    ("inputs:\n  paths: 3\n", "inputs.paths: 3 is not accepted; expected a list"),
    ("inputs:\n  watch: maybe\n", "inputs.watch: 'maybe' is not accepted; expected true or false"),
    ("inputs: 5\n", "inputs: expected a mapping of keys"),
    ("inputs:\n  max_open_files: many\n", "inputs.max_open_files: 'many' is not accepted"),
    # impossible values
    ("buffer:\n  max_bytes: 1KiB\n", "buffer.max_bytes: '1KiB' is too small; expected at least"),
    (
        "elasticsearch:\n  bulk:\n    concurrency: 1000\n",
        "elasticsearch.bulk.concurrency: 1000 is too large; expected at most 64",
    ),
    ("inputs:\n  read_from: middle\n", "expected one of 'beginning', 'end'"),
    (
        "checkpoint:\n  interval: soon\n",
        "checkpoint.interval: 'soon' is not accepted; expected a duration",
    ),
    (
        "metrics:\n  listen: everywhere\n",
        "metrics.listen: 'everywhere' is not accepted; expected host:port",
    ),
    ("elasticsearch:\n  hosts: [ftp://es]\n", "elasticsearch.hosts: ['ftp://es'] is not accepted"),
    (
        "elasticsearch:\n  data_stream: Logs-App\n",
        "elasticsearch.data_stream: 'Logs-App' is not accepted",
    ),
    (
        "parsing:\n  multiline:\n    continuation: '(unclosed'\n",
        "parsing.multiline.continuation: '(unclosed' is not accepted; expected a valid regular",
    ),
    (
        "elasticsearch:\n  password: ${NOT_SET}\n",
        "elasticsearch.password: environment variable NOT_SET is not set",
    ),
    ("inputs: [\n", "not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), MISTAKES)
def test_each_class_of_mistake_names_the_key_and_what_is_accepted(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})
    assert message in str(info.value)


def test_secrets_never_appear_in_errors():
    with pytest.raises(ConfigError) as info:
        parse_config("elasticsearch:\n  hosts: ['https://elastic:hunter2@es:9200']\n", {})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config("elasticsearch:\n  api_key: [1]\n", {})
    assert "[1]" not in str(info.value) and "<hidden>" in str(info.value)


@pytest.mark.parametrize(("text", "message"), MISTAKES[:6])
def test_check_config_exits_2_with_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "shipper", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert message in result.stderr
    run = subprocess.run(
        [sys.executable, "-m", "shipper", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert message in run.stderr


EXAMPLE = ROOT / "config.example.yaml"


def test_check_config_accepts_the_example_and_says_what_it_needs_here(tmp_path):
    def check(*args: str, **env: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        return subprocess.run(
            [sys.executable, "-m", "shipper", "check-config", *args, str(EXAMPLE)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**environ, **env},
        )

    result = check("--config-only", NODE_NAME="node-1")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    # The example follows the API of the cluster it runs in: elsewhere that is what fails.
    result = check(NODE_NAME="node-1")
    assert result.returncode == 2
    assert "kubernetes.enabled: not running in a cluster" in result.stderr
    result = check("--config-only")
    assert result.returncode == 2
    assert "kubernetes.node_name: empty while kubernetes.enabled is true" in result.stderr
