"""Pure parsing of Kubernetes container logs: no I/O, nothing imported from shipper/."""

from parsers.decoder import CRI, DOCKER, DecoderOptions, FileDecoder
from parsers.events import (
    INVALID_UTF8,
    MULTILINE,
    PARSE_ERROR,
    PARTIAL,
    TRUNCATED,
    LogEvent,
)
from parsers.filename import ContainerRef, NotAContainerLog, container_ref, parse_log_path
from parsers.lines import parse_cri, parse_docker
from parsers.multiline import BUILTIN as MULTILINE_RULES
from parsers.multiline import MultilineRule, rule
from parsers.timestamp import normalize_time

__all__ = [
    "CRI",
    "DOCKER",
    "INVALID_UTF8",
    "MULTILINE",
    "MULTILINE_RULES",
    "PARSE_ERROR",
    "PARTIAL",
    "TRUNCATED",
    "ContainerRef",
    "DecoderOptions",
    "FileDecoder",
    "LogEvent",
    "MultilineRule",
    "NotAContainerLog",
    "container_ref",
    "normalize_time",
    "parse_cri",
    "parse_docker",
    "parse_log_path",
    "rule",
]
