"""The embeddings wire models: the request's documented limits and every reply shape, read once."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest

from airflow_gradient.batch.in_task.embeddings.items import ENDPOINT, request_key
from airflow_gradient.exceptions import GradientProtocolError, GradientRequestInvalid
from airflow_gradient.models.embeddings import EmbeddingsRequest, EmbeddingsResult, decode_embeddings, parse_embeddings


def b64(*numbers: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(numbers)}f", *numbers)).decode()


def reply(*embeddings: object, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "object": "list", "model": "m",
        "data": [{"object": "embedding", "index": n, "embedding": e} for n, e in enumerate(embeddings)],
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }
    body.update(fields)
    return body


def typed_then_object(body: dict, count: int, **fields: Any) -> EmbeddingsResult:
    """A reply read as the hook reads it: one typed decode, else the JSON object."""
    content = json.dumps(body).encode()
    return decode_embeddings(content, count, **fields) or parse_embeddings(json.loads(content), count, **fields)


READERS: dict[str, Callable[..., EmbeddingsResult]] = {"object": parse_embeddings, "typed": typed_then_object}


@pytest.fixture(params=sorted(READERS))
def read(request: pytest.FixtureRequest) -> Callable[..., EmbeddingsResult]:
    return READERS[request.param]


def test_a_well_formed_reply_is_read_by_the_typed_decode() -> None:
    body = reply(b64(0.5, -0.25), [0.125, 1.0])
    result = decode_embeddings(json.dumps(body).encode(), 2, model="asked")
    assert result is not None and result.vectors == [[0.5, -0.25], [0.125, 1.0]]


def test_both_encodings_are_read_whatever_was_asked(read) -> None:
    result = read(reply(b64(0.5, -0.25), [0.125, 1.0]), 2, model="asked")
    assert result.vectors == [[0.5, -0.25], [0.125, 1.0]]
    assert (result.model, result.dimensions) == ("m", 2)
    assert result.usage.as_dict() == {"input_tokens": 4, "total_tokens": 4}


def test_rows_are_put_in_input_order_by_index(read) -> None:
    body = reply([1.0], [2.0], [3.0])
    body["data"] = list(reversed(body["data"]))  # type: ignore[call-overload]
    assert read(body, 3, model="m").vectors == [[1.0], [2.0], [3.0]]


def test_missing_usage_is_zero_and_missing_model_is_the_one_asked(read) -> None:
    body = reply([1.0])
    del body["usage"], body["model"]
    result = read(body, 1, model="asked")
    assert result.model == "asked" and result.usage.total_tokens == 0


@pytest.mark.parametrize(
    ("body", "count", "message"),
    [
        (reply([1.0], [2.0]), 3, "2 vectors for 3 inputs"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}, 2, "index 0 appears twice"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [2.0]}]}, 2, "no valid 'index'"),
        ({"data": [{"index": True, "embedding": [1.0]}]}, 1, "no valid 'index'"),
        ({"data": [{"index": None, "embedding": [1.0]}]}, 1, "no valid 'index'"),
        (reply([1.0, 2.0], [3.0]), 2, "different or zero lengths"),
        (reply([]), 1, "different or zero lengths"),
        (reply("not base64!"), 1, "not base64"),
        (reply(base64.b64encode(b"abc").decode()), 1, "not float32s"),
        (reply(["x"]), 1, "not a list of numbers"),
        (reply([True]), 1, "not a list of numbers"),
        (reply({"a": 1}), 1, "not a float list or base64"),
        ({"object": "list"}, 1, "no 'data' list"),
        (reply([1.0], usage={"prompt_tokens": -1}), 1, "usage.prompt_tokens"),
    ],
)
def test_replies_that_do_not_match_the_request_are_protocol_errors(read, body: dict, count: int, message: str) -> None:
    with pytest.raises(GradientProtocolError, match=message):
        read(body, count, model="m", status=200, request_id="req_1")


@pytest.mark.parametrize(
    ("fields", "named", "message"),
    [
        ({"input": ""}, "input", "must not be empty"),
        ({"input": ["a", "  "]}, "input", r"input\[1\] must not be empty"),
        ({"input": ["a", 3]}, "input", r"input\[1\] must be a string, got int"),
        ({"input": []}, "input", "1 to 2048"),
        ({"input": ["a"] * 2049}, "input", "got 2049"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "'float' or 'base64'"),
        ({"input": "a", "dimensions": 3}, "dimensions", "not a parameter of /v1/embeddings"),
        ({"input": "a", "model": ""}, "model", "an embedding model id"),
    ],
)
def test_request_limits_are_refused_naming_the_field(fields: dict, named: str, message: str) -> None:
    with pytest.raises(GradientRequestInvalid, match=message) as caught:
        EmbeddingsRequest.build(**{"model": "m", **fields})
    assert caught.value.errors[0][0] == named


def test_request_sends_only_what_is_set() -> None:
    request = EmbeddingsRequest.build(model="m", input=["a", "b"])
    assert request.to_wire() == {"model": "m", "input": ["a", "b"], "encoding_format": "base64"}
    assert EmbeddingsRequest.build(model="m", input="a", user="u").texts == ["a"]


@pytest.mark.parametrize("text", ["plain", 'quote " and \\ back', "\x00\x1f\x7f\n\t", "é€😀\u2028", "a \ud800 b"])
def test_request_key_is_the_json_text_earlier_runs_digested(text: str) -> None:
    # reuse_results_from matches digests written by earlier versions, taken over this text.
    def outcome(make: Callable[[], bytes]) -> bytes | str:
        try:
            return make()
        except UnicodeEncodeError as exc:  # a lone surrogate, refused alike
            return type(exc).__name__

    model = 'model "é"'
    assert outcome(lambda: request_key(model, text)) == outcome(
        lambda: json.dumps([ENDPOINT, model, text], ensure_ascii=False).encode())
