"""Configuration: one YAML file, `${VAR}` substitution, strict validation.

    fields.py    how a key is declared (kind, rules, doc)
    schema.py    every key: kind, bounds, default, one-line description
    controls.py  ... of the per-workload controls: routing, limits, redaction
    kinds.py     one value of each kind, coerced and bounded
    load.py      YAML, environment variables, the dataclasses
    validate.py  rules across keys and against the machine (`validate()`)
    example.py   config.example.yaml (`python -m shipper.config`)

Load, then validate: `validate(load_config(path))` is what `shipper check-config` and
`shipper run` do. A mistake is reported with the key path, the bad value and what would
be accepted.
"""

from shipper.config.controls import (
    Limits,
    NamespaceLimit,
    Redaction,
    RedactionBuiltins,
    RedactionRule,
    Routing,
)
from shipper.config.errors import ConfigError
from shipper.config.example import render_example
from shipper.config.kinds import parse_duration, parse_size
from shipper.config.load import default_config, load_config, parse_config, secret
from shipper.config.schema import (
    Buffer,
    Bulk,
    Checkpoint,
    Config,
    DeletedFiles,
    Elasticsearch,
    Inputs,
    Kubernetes,
    Logging,
    Metrics,
    Multiline,
    Parsing,
    Retry,
    Shutdown,
    Tls,
    iter_keys,
    multiline_rule,
)
from shipper.config.validate import validate

__all__ = [
    "Buffer",
    "Bulk",
    "Checkpoint",
    "Config",
    "ConfigError",
    "DeletedFiles",
    "Elasticsearch",
    "Inputs",
    "Kubernetes",
    "Limits",
    "Logging",
    "Metrics",
    "Multiline",
    "NamespaceLimit",
    "Parsing",
    "Redaction",
    "RedactionBuiltins",
    "RedactionRule",
    "Retry",
    "Routing",
    "Shutdown",
    "Tls",
    "default_config",
    "iter_keys",
    "load_config",
    "multiline_rule",
    "parse_config",
    "parse_duration",
    "parse_size",
    "render_example",
    "secret",
    "validate",
]
