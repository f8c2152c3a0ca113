"""A text of an embeddings batch as a :class:`~airflow_gradient.batch.inputs.BatchItem`, and packs.

An item's request carries the model and the text (the other fields of a ``/v1/responses`` request
stay unset and are never sent). Its ``request_digest``, which ``reuse_results_from`` matches,
covers the endpoint, the model and the text: a vector is reused only for the same text and model,
never for a ``/v1/responses`` row of the same prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from airflow_gradient import arguments
from airflow_gradient.batch.inputs import CHARS_PER_TOKEN, DIGEST_BYTES, HASH_ID_CHARS, BatchItem, take_custom_id
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.models.embeddings import MAX_INPUTS, text_problem
from airflow_gradient.models.request import ResponseRequest

ENDPOINT = "/v1/embeddings"
HASH_ID_PREFIX = "h-"  # as the ids of /v1/responses items without one
Pack = list[BatchItem]


@dataclass(frozen=True)
class Packing:
    """How texts are packed into requests; checked when made.

    :param max_inputs_per_request: texts per request, 1 to 2048.
    :param max_tokens_per_request: a cap on the estimated tokens of one request (None: no cap); a
        text estimated above it goes alone.
    """

    max_inputs_per_request: int = MAX_INPUTS
    max_tokens_per_request: int | None = None

    def __post_init__(self) -> None:
        arguments.int_between("max_inputs_per_request", self.max_inputs_per_request, 1, MAX_INPUTS)
        arguments.optional(arguments.positive_int, "max_tokens_per_request", self.max_tokens_per_request)


def estimate_tokens(text: str) -> int:
    """Tokens a text will probably cost, before the reply says (an embedding has no output)."""
    return len(text) // CHARS_PER_TOKEN + 1


def item_builder(model: str) -> Callable[[int, dict[str, Any], bool], BatchItem]:
    """What makes each spec of :class:`~airflow_gradient.batch.inputs.BatchInputs` an embeddings item
    for ``model``: ``{"input": text, "custom_id"?}``, nothing else."""
    # Every item's request is this one with its own text: a copy costs a dict copy, where building
    # a request fills in its 26 defaults. Validation (digest=False) needs only the model.
    template = ResponseRequest.model_construct(model=model, input="")

    def build(index: int, spec: dict[str, Any], digest: bool) -> BatchItem:
        custom_id, where = take_custom_id(index, spec) if "custom_id" in spec else (None, f"in item {index}")
        text = spec.pop("input")
        if spec:
            name = sorted(spec)[0]
            raise GradientRequestInvalid(
                f"invalid request {where}: {name}: not a parameter of /v1/embeddings (an item holds input "
                "and custom_id)", [(f"item[{index}].{name}", "not a parameter of /v1/embeddings")])
        problem = text_problem(text)
        if problem is not None:
            raise GradientRequestInvalid(f"invalid request {where}: input: {problem}",
                                         [(f"item[{index}].input", problem)])
        key = request_key(model, text) if custom_id is None or digest else b""
        if custom_id is None:
            custom_id = HASH_ID_PREFIX + hashlib.sha256(key).hexdigest()[:HASH_ID_CHARS]
        return BatchItem(index, str(custom_id), template.model_copy(update={"input": text}) if digest else template,
                         estimate_tokens(text),
                         hashlib.blake2b(key, digest_size=DIGEST_BYTES).hexdigest() if digest else "")

    return build


def request_key(model: str, text: str) -> bytes:
    """What an embeddings item's ``request_digest`` and hash id are taken over: the endpoint, the model
    and the text (the same digest length as :func:`~airflow_gradient.batch.inputs.request_digest`, so
    ``reuse_results_from`` reads both kinds of rows alike).

    The bytes of ``json.dumps([ENDPOINT, model, text], ensure_ascii=False)``, which earlier runs'
    digests were taken over, put together from the string encoder ``json.dumps`` itself calls:
    twenty times faster, and every item's key is made twice (validation, then sending)."""
    return f"[{_ENDPOINT_JSON}, {encode_basestring(model)}, {encode_basestring(text)}]".encode()


_ENDPOINT_JSON = encode_basestring(ENDPOINT)


def text_of(item: BatchItem) -> str:
    """The text an embeddings item carries."""
    text = item.request.input
    assert isinstance(text, str)  # item_builder made it
    return text


def packs(items: Iterable[BatchItem], packing: Packing) -> Iterator[Pack]:
    """``items`` in packs of at most ``max_inputs_per_request`` texts and ``max_tokens_per_request``
    estimated tokens, in input order; items answered by an earlier run (``reused``) come in packs of
    their own, which are written, not sent."""
    pack: Pack = []
    reused: Pack = []
    tokens = 0
    cap_inputs, cap_tokens = packing.max_inputs_per_request, packing.max_tokens_per_request
    for item in items:
        if item.reused is not None:
            reused.append(item)
            if len(reused) >= cap_inputs:
                yield reused
                reused = []
            continue
        over_tokens = cap_tokens is not None and tokens + item.estimated_tokens > cap_tokens
        if pack and (len(pack) >= cap_inputs or over_tokens):
            yield pack
            pack, tokens = [], 0
        pack.append(item)
        tokens += item.estimated_tokens
    if reused:
        yield reused
    if pack:
        yield pack
