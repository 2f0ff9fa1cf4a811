"""The fake LLM backend keeps the engine's contract where tests lean on it: the same input checks,
normalised label scores, schema-valid structured answers, streaming that joins to the answer."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from recagent.errors import ConfigError
from recagent.llm import FakeBackend, LLMBackendError, PromptTooLongError
from recagent.llm.fake import smallest_instance


@pytest.fixture(scope="module")
def fake():
    return FakeBackend(max_model_len=64)


def test_label_scores_are_deterministic_log_probabilities(fake):
    labels = [fake.single_token_id(c) for c in "ABCD"]
    first = fake.score_labels(["Pick one: A, B, C or D", "Another prompt"], labels)
    assert first == fake.score_labels(["Pick one: A, B, C or D", "Another prompt"], labels)
    for scores in first:
        assert set(scores) == set(labels) and math.isclose(sum(math.exp(v) for v in scores.values()), 1.0)
    assert first[0] != first[1]  # the prompt matters


def test_it_refuses_what_the_engine_refuses(fake):
    with pytest.raises(PromptTooLongError):
        fake.score_labels(["word " * 100], [fake.single_token_id("A")])
    with pytest.raises(ConfigError, match="unknown LoRA adapter"):
        fake.generate(["hi"], max_tokens=8, adapter="nope")
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        fake.score_labels(["hi"], [10**9])


def test_structured_answers_are_valid_under_their_schema(fake, ml_parser):
    schemas = [
        ml_parser.schema,  # the chat parse's real schema
        {
            "type": "object",
            "properties": {
                "A": {"enum": ["x", "y"]},
                "B": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            },
            "required": ["A", "B"],
            "additionalProperties": False,
        },  # fmt: skip
        {
            "$defs": {"T": {"anyOf": [{"type": "string", "minLength": 3}, {"type": "null"}]}},
            "type": "object",
            "properties": {"t": {"$ref": "#/$defs/T"}},
            "required": ["t"],
        },  # fmt: skip
    ]
    for schema in schemas:
        (text,) = FakeBackend().generate(["x"], json_schema=schema, compact=True)
        jsonschema.validate(json.loads(text), schema)
    assert smallest_instance({"type": ["null", "string"]}) is None


def test_stream_joins_to_the_answer_and_health_follows_the_flag():
    fake = FakeBackend()
    pieces = [p for _, p in fake.generate_stream(["a", "b"], max_tokens=8)]
    assert len(pieces) > 2 and "".join(pieces) == "".join(fake.generate(["a", "b"], max_tokens=8))
    calls = fake.calls
    fake.healthy = False
    assert fake.health() is False
    with pytest.raises(LLMBackendError):
        fake.generate(["a"])
    assert fake.calls == calls
