"""Protocols: JSONSchemaBench's 2-shot prompt, validator and limits, against its published construction."""
from __future__ import annotations

import json

import pytest

from harness.config import build_config
from harness.errors import ConfigError
from harness.protocols import get_protocol
from harness.scoring.jsonschema_check import judge
from harness.tasks.prompts import json_schema_prompt
from harness.tasks.task import Task

SYSTEM = "You need to generate a JSON object that matches the schema below."


def _task(source: str, schema) -> Task:
    return Task(id="t", kind="json_schema", source=source, prompt=json_schema_prompt(schema, "A request."), schema=schema)


def test_jsb_two_shot_prompt_text_for_a_glaive_schema():
    """JSB core/messages.py: system line, two (schema, instance) user/assistant pairs of the
    subset family verbatim, then json.dumps(target) with default separators."""
    target = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    messages = get_protocol("jsonschemabench").messages(_task("jsonschemabench:Glaiveai2K", target))
    expected = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": '{"properties": {"username": {"description": "The user\'s username", "type": "string"}, '
                                    '"email": {"description": "The user\'s email address", "type": "string"}, "age": '
                                    '{"description": "The user\'s age", "type": "integer"}, "is_active": {"description": '
                                    '"Whether the user is active", "type": "boolean"}}, "required": ["username", "email"], '
                                    '"type": "object"}'},
        {"role": "assistant", "content": '{"username": "johndoe", "email": "john@example.com", "age": 30, "is_active": true} '},
        {"role": "user", "content": '{"properties": {"product_id": {"description": "The ID of the product", "type": "string"}, '
                                    '"rating": {"description": "The rating given by the user", "type": "integer"}, '
                                    '"comments": {"description": "Additional comments about the product", "type": "string"}}, '
                                    '"required": ["product_id", "rating"], "type": "object"}'},
        {"role": "assistant", "content": '{"product_id": "12345", "rating": 5, "comments": "Excellent product! Highly recommend."} '},
        {"role": "user", "content": '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}'},
    ]
    assert messages == expected


def test_github_family_shares_two_pretty_printed_shots():
    proto = get_protocol("jsonschemabench")
    for subset in ("Github_easy", "Github_ultra"):
        m = proto.messages(_task(f"hub:{subset}:test", {"type": "integer"}))
        assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert m[1]["content"].startswith('{\n    "$schema": "http://json-schema.org/draft-04/schema#",\n    "definitions": {\n'
                                          '        "address1": {"type": "string"},')
        assert m[2]["content"] == ('{"address1": "123 Main Street", "address2": "Apt 4B", "city": "Seattle", '
                                   '"country": "USA", "postalCode": "98101", "state": "WA"}')
        assert m[-1]["content"] == '{"type": "integer"}'


def test_tasks_outside_jsb_families_get_jsb_construction_with_zero_shots():
    proto = get_protocol("jsonschemabench")
    task = _task("builtin", {"type": "integer"})
    assert proto.messages(task) == [{"role": "system", "content": SYSTEM}, {"role": "user", "content": '{"type": "integer"}'}]
    assert proto.shots_for(task) == 0
    assert get_protocol("cdbench").messages(_task("jsonschemabench:Kubernetes", {})) == json_schema_prompt({}, "A request.")


def test_jsb_validates_under_2020_12_whatever_schema_says():
    # Draft 4's exclusiveMaximum is a boolean; under 2020-12 it is not a valid schema, so ec = 0 (ANCHORS 1.4).
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "maximum": 5, "exclusiveMaximum": True}
    assert judge(schema, "5").valid is False and judge(schema, "4").valid is True
    assert judge(schema, "4", "2020-12", True).schema_valid is False
    assert judge(schema, "4", "2020-12", True).valid is False


@pytest.mark.parametrize("fmt,value,ok", [("ipv4", "10.0.0.1", True), ("ipv4", "010.0.0.1", False),
                                          ("ipv4", "1.2.3.\u0664", False), ("ipv6", "fe80::1%eth0", False),
                                          ("uuid", "123e4567-e89b-12d3-a456-426614174000", True),
                                          ("uuid", "{123e4567-e89b-12d3-a456-426614174000}", False)])
def test_strict_formats(fmt, value, ok):
    assert judge({"type": "string", "format": fmt}, json.dumps(value), "2020-12", True).valid is ok


def test_protocol_limits_apply_unless_flags_say_otherwise():
    cfg = build_config({}, {"protocol": "jsonschemabench"})
    assert (cfg.compile_timeout_s, cfg.generation_timeout_s, cfg.max_tokens) == (10.0, 60.0, 2048)
    assert cfg.bootstrap_resamples == 100
    cfg = build_config({}, {"protocol": "jsonschemabench", "max_tokens": 64})
    assert cfg.max_tokens == 64 and cfg.compile_timeout_s == 10.0
    assert build_config({}, {}).compile_timeout_s == 5.0
    with pytest.raises(ConfigError, match="unknown protocol"):
        build_config({}, {"protocol": "jsb"})
