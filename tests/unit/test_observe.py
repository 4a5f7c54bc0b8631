"""The Prometheus exposition shipper serves, read back by the parser tests and bench use."""

from hypothesis import given
from hypothesis import strategies as st

from shipper.observe import Metrics, parse_exposition


@given(
    st.integers(0, 10**12),
    st.lists(st.sampled_from(["connection", "429", 'odd "quoted\\" reason']), max_size=5),
)
def test_counters_read_back_as_rendered(lines, reasons):
    m = Metrics()
    m.lines_read.inc(lines)
    for reason in reasons:
        m.retries.inc(1, reason)
    values = parse_exposition(m.render().decode())
    assert values["shipper_lines_read_total"] == lines
    assert sum(v for k, v in values.items() if k.startswith("shipper_retries_total{")) == len(
        reasons
    )
    assert values["shipper_documents_indexed_total"] == 0
