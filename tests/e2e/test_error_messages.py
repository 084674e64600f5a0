"""Every pinned error of the control plane, over the wire, against botocore.

`crates/control/tests/error_messages.json` lists a setup and the requests
that must fail, each with the code and the message it must answer word for
word. `crates/control/tests/error_messages.rs` checks them against the
control plane in-process; this replays them against a real server as signed
requests (below the SDK, so that requests botocore would refuse before
sending still reach the server), and checks that every code is one botocore's
model lists for that operation, as an SDK's error handling expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import botocore.session
import pytest

TABLE = Path(__file__).resolve().parents[2] / "crates" / "control" / "tests" / "error_messages.json"
# Answered by the protocol itself rather than an operation: a body that is
# not JSON, or an operation the model does not have.
PROTOCOL_ERRORS = {"SerializationException", "UnknownOperationException"}


def load_table() -> dict:
    return json.loads(TABLE.read_text())


def substitute(text: str, captured: dict[str, str]) -> str:
    for name, value in captured.items():
        text = text.replace("${" + name + "}", value)
    return text


def body_of(case: dict, captured: dict[str, str]) -> str:
    raw = case["body"] if "body" in case else json.dumps(case["request"])
    return substitute(raw, captured)


def dig(value, path: str):
    for part in path.split("."):
        value = value[part]
    return value


@pytest.fixture(scope="module")
def model():
    return botocore.session.get_session().get_service_model("ecs")


@pytest.fixture(scope="module")
def prepared(server):
    # The module's own server: the table's names are fixed.
    table = load_table()
    captured: dict[str, str] = {}
    for step in table["setup"]:
        answer = server.signed_request(step["operation"], body_of(step, captured))
        assert answer.status == 200, (step, answer.body)
        for name, path in step.get("capture", {}).items():
            captured[name] = dig(answer.json, path)
    return server, captured


CASES = load_table()["cases"]


def case_id(case: dict) -> str:
    return f"{case['operation']}-{case['code']}"


def test_the_table_covers_many_operations():
    operations = {case["operation"] for case in CASES}
    assert len(CASES) >= 100 and len(operations) >= 40, (len(CASES), len(operations))


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_error_is_answered_word_for_word(prepared, model, case):
    server, captured = prepared
    answer = server.signed_request(case["operation"], body_of(case, captured))
    assert answer.status >= 400, answer.body
    assert answer.error_code == case["code"], answer.body
    assert answer.message == substitute(case["message"], captured)
    if case["operation"] in model.operation_names:
        modelled = {shape.name for shape in model.operation_model(case["operation"]).error_shapes}
        assert case["code"] in modelled | PROTOCOL_ERRORS, (
            f"{case['operation']} answered {case['code']}, which botocore's model does not list: {sorted(modelled)}"
        )
