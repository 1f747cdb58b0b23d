"""With streams[].cluster_by, alerts say the p-value was corrected and by how much."""

from driftmon.outputs.alerts.payload import build_payload
from tests.outputs.alerts.test_payload import result


def test_alert_description_and_result_carry_the_design_effect():
    plain = build_payload(result(), status="firing", severity="warning", receiver="x", starts_at="s")
    clustered = build_payload(result(design_effect=12.34), status="firing", severity="warning", receiver="x",
                              starts_at="s")
    assert "design effect" not in plain["alerts"][0]["annotations"]["description"]
    assert plain["driftmon"]["result"]["design_effect"] is None
    assert "corrected for clustering, design effect 12.3)" in clustered["alerts"][0]["annotations"]["description"]
    assert clustered["driftmon"]["result"]["design_effect"] == 12.34
