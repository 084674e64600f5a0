"""botocore's own query parser over the XML Flotilla's protocol layer writes.

crates/protocol/tests/botocore_fixtures.rs writes each output of
crates/protocol/tests/fixtures/responses.json as XML and pins it, byte for
byte, to the golden `<service>.<Operation>.xml` beside it; here botocore
parses those same files, and must find exactly the output that was written.
Together: what the Rust writer produces is what botocore reads back."""

import datetime
import json
from pathlib import Path

import botocore.parsers
import botocore.session
import pytest

from support import REPO_ROOT

FIXTURES = REPO_ROOT / "crates/protocol/tests/fixtures"
CASES = json.loads((FIXTURES / "responses.json").read_text())["cases"]


def comparable(value):
    """botocore's parse with datetimes as seconds since the epoch, the way
    the generated types and responses.json hold them."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case['service']}.{case['operation']}")
def test_botocore_parses_the_golden_xml(case):
    model = botocore.session.get_session().get_service_model(case["service"])
    operation = model.operation_model(case["operation"])
    body = (FIXTURES / f"{case['service']}.{case['operation']}.xml").read_bytes()
    parsed = botocore.parsers.create_parser("query").parse(
        {"status_code": 200, "headers": {}, "body": body}, operation.output_shape,
    )
    metadata = parsed.pop("ResponseMetadata")
    assert metadata["RequestId"] == "7f1d6e7a-0000-4000-8000-000000000001"
    assert comparable(parsed) == case["output"]
