"""The items of a batch: where they come from, how each becomes a validated request, its ``custom_id``.

Items are produced by a generator and never held together, so a batch of 100k rows read from
object storage costs the memory of one row at a time. Whoever needs every item checked before the
first request is sent (the runner) makes one full pass with :meth:`BatchInputs.validate`, then a
second pass to send: the source is read twice rather than kept.

Three sources, exactly one per batch:

- ``inputs``: a list whose elements are a string, a list of input items, or a dict with ``input``
  plus an optional ``custom_id`` and per-item overrides of any request parameter;
- ``prompt_template`` with ``rows``: a list of dicts, each rendered into the template;
- ``prompt_template`` with ``rows_path``: JSONL or CSV on any ``ObjectStoragePath``, read lazily.
  A row's ``custom_id`` column, when present, is the item's id.

A :class:`Shard` selects one of K parts of the items, so that K mapped tasks can share one input
without an upstream step copying it (see ``docs/sharded-batches.md``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import jinja2

from airflow_gradient import arguments
from airflow_gradient.exceptions import GradientRequestInvalid
from airflow_gradient.models.request import ResponseRequest, build_request, require_model

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

# Rough characters per token, for the estimate the rate limiter needs before a reply tells usage.
CHARS_PER_TOKEN = 4
# Output tokens assumed for an item without max_output_tokens; usage corrects it afterwards.
DEFAULT_OUTPUT_TOKENS_ESTIMATE = 256
HASH_ID_CHARS = 24
DIGEST_BYTES = 16

Renderer = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One request of a batch: its position in the input, its id, the validated request."""

    index: int
    custom_id: str
    request: ResponseRequest
    estimated_tokens: int
    # reuse_digest() of the request: rows carry it, so that a later run can reuse them.
    digest: str = ""
    # The row of an identical request that succeeded in an earlier run (reuse_results_from):
    # the item is not sent, this row is written instead.
    reused: dict[str, Any] | None = None


def custom_id_key(custom_id: str) -> int:
    """A 64-bit key of a ``custom_id``: what resume's set of done ids and the shard choice hold
    (sets of these keep memory flat for 100k-item batches). Not :func:`reuse_digest`."""
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=8).digest(), "big")


def _canonical(wire: dict[str, Any]) -> bytes:
    return json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count``: the items whose ``custom_id`` digest modulo ``count`` is ``index``.

    An item's shard depends on its id alone, the key resume also uses: the input may be reordered
    or grown between tries and every item stays with the shard whose part files hold its row, and
    two items with one id always meet in one shard, whose check refuses them. Items with an explicit
    ``custom_id`` are passed over without rendering their prompt.
    """

    index: int
    count: int

    @classmethod
    def of(cls, index: Any, count: Any) -> Shard | None:
        """The shard named by the operator's ``shard_index`` and ``shard_count``; None when neither is
        given. Raises :class:`GradientRequestInvalid` naming the argument otherwise."""
        if index is None and count is None:
            return None
        if count is None:
            arguments.refuse("shard_count", "an integer >= 1, given with shard_index", got=count)
        count = arguments.positive_int("shard_count", count)
        if index is None:
            arguments.refuse("shard_index", f"an integer from 0 to {count - 1}, given with shard_count", got=index)
        index = arguments.int_between("shard_index", index, 0, count - 1)
        return cls(index, count)

    def owns(self, custom_id: str) -> bool:
        return custom_id_key(custom_id) % self.count == self.index


def custom_id_problem(value: Any) -> str | None:
    """What is wrong with an item's own ``custom_id``, None when nothing is (it is used as
    ``str(value)``): the one rule, which the shard choice and the item's check both apply. An id
    holding a lone surrogate (from a ``\\ud800`` escape in JSON) cannot be encoded in a row, a
    digest or a request, so it is refused here rather than as a bare ``UnicodeEncodeError``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value):
        return "must be a non-empty string"
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"must be valid Unicode text: it holds a lone surrogate ({str(value)[exc.start]!r} at position "
                f"{exc.start}), which UTF-8 cannot encode")
    return None


def _explicit_id(value: Any) -> str | None:
    """An item's own ``custom_id`` when it is a usable one (anything else is left to the item's checks)."""
    return str(value) if custom_id_problem(value) is None else None


def take_custom_id(index: int, spec: dict[str, Any]) -> tuple[Any, str]:
    """Pop the item's own ``custom_id`` from ``spec`` (None when it has none), and the words that
    name the item in errors (``in item 3 (custom_id 'x')``). Both batch kinds' items call it."""
    custom_id = spec.pop("custom_id", None)
    problem = custom_id_problem(custom_id) if custom_id is not None else None
    if problem is not None:
        raise GradientRequestInvalid(
            f"invalid request in item {index}: custom_id: {problem} (got {custom_id!r})",
            [(f"item[{index}].custom_id", problem)],
        )
    return custom_id, f"in item {index}" + (f" (custom_id {str(custom_id)!r})" if custom_id is not None else "")


def custom_id_from_request(wire: dict[str, Any]) -> str:
    """The ``custom_id`` of an item that has none: ``h-`` and a hash of its rendered request,
    stable across runs."""
    return "h-" + hashlib.sha256(_canonical(wire)).hexdigest()[:HASH_ID_CHARS]


def reuse_digest(wire: dict[str, Any]) -> str:
    """The reuse digest of a whole request (model, every parameter, instructions, input), stored in
    each row as its ``request_digest`` field: 32 hex
    characters of BLAKE2b over its canonical JSON. Two requests with the same digest get the same
    kind of answer, so a succeeded row of one may stand for the other (``reuse_results_from``)."""
    return hashlib.blake2b(_canonical(wire), digest_size=DIGEST_BYTES).hexdigest()


def estimate_token_split(request: ResponseRequest) -> tuple[int, int]:
    """Input and output tokens the request will probably cost, before any reply says."""
    text = request.input if isinstance(request.input, str) else json.dumps(
        [item.model_dump(exclude_none=True) for item in request.input]
    )
    chars = len(text) + len(request.instructions or "")
    output = request.max_output_tokens or DEFAULT_OUTPUT_TOKENS_ESTIMATE
    return chars // CHARS_PER_TOKEN + 1, output


def estimate_tokens(request: ResponseRequest) -> int:
    """Tokens the request will probably cost (input and output), before any reply says."""
    return sum(estimate_token_split(request))


def iter_input_rows(path: ObjectStoragePath) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL (one object a line) or CSV (header line) file on an ``ObjectStoragePath``.

    The user's input, so a bad line is an error (before anything is sent); the batch's own part
    files are read by :func:`~airflow_gradient.batch.parts.iter_rows`, which passes a bad line
    over (its item is sent again).

    The file is read one line at a time and must be UTF-8 (a byte order mark, as spreadsheets
    write, is skipped). A line that cannot be a row raises :class:`GradientRequestInvalid` naming
    the file and the line: text that is not UTF-8, JSON that is not an object (or holds NaN or
    Infinity, which JSON has not), a CSV row with more or fewer fields than the header.
    """
    lines = _text_lines(path)
    if str(path).lower().endswith(".csv"):
        yield from _csv_rows(path, lines)
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_not_json)
        except ValueError as exc:
            raise _bad_line(path, number, f"is not JSON ({exc})", "not JSON") from None
        if not isinstance(row, dict):
            raise _bad_line(path, number, f"is a JSON {type(row).__name__}, not an object", "not an object")
        yield row


def _not_json(constant: str) -> NoReturn:
    # Python reads NaN and Infinity, which JSON has not: rendered into a prompt they would go out
    # as the text "nan", paid for, as a short CSV row once sent "None".
    raise ValueError(f"{constant} is not a JSON value")


def _bad_line(path: ObjectStoragePath, number: int, problem: str, rule: str) -> GradientRequestInvalid:
    return GradientRequestInvalid(f"invalid rows_path {path}: line {number} {problem}", [(f"rows_path:{number}", rule)])


def _text_lines(path: ObjectStoragePath) -> Iterator[str]:
    """The file's lines (endings kept, as the csv module wants them), decoded one by one so that
    bytes that are not UTF-8 are reported with their line and byte offset."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise _bad_line(
                    path, number, f"is not UTF-8: {exc.reason} at byte {offset + exc.start} of the file "
                    f"({raw[exc.start:exc.start + 4]!r}); save it as UTF-8", "not UTF-8",
                ) from None
            offset += len(raw)


def _csv_rows(path: ObjectStoragePath, lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    reader = csv.reader(lines)
    try:
        header = next((fields for fields in reader if fields), None)  # blank lines before it are passed over
        if header is None:
            return
        if len(set(header)) != len(header):
            repeated = sorted({name for name in header if header.count(name) > 1})
            raise _bad_line(path, reader.line_num, f"(the header) repeats the column(s) {repeated}",
                            "repeated column")
        for fields in reader:
            if not fields:  # a blank line
                continue
            if len(fields) != len(header):
                raise _bad_line(
                    path, reader.line_num,
                    f"has {len(fields)} fields where the header has {len(header)} ({', '.join(header)}); "
                    "quote a value that holds a comma",
                    "wrong number of fields",
                )
            yield dict(zip(header, fields))
    except csv.Error as exc:
        raise _bad_line(path, reader.line_num, f"is not valid CSV ({exc})", "not CSV") from None


def _item_spec(value: Any, index: int) -> dict[str, Any]:
    """An element of ``inputs`` as ``{"input": ..., "custom_id"?: ..., overrides...}``."""
    if isinstance(value, (str, list)):
        return {"input": value}
    if isinstance(value, Mapping):
        if "input" not in value:
            raise GradientRequestInvalid(
                f"invalid request in item {index}: input: missing; allowed: a dict with 'input' "
                "(and optional 'custom_id' and request parameters)",
                [(f"item[{index}].input", "missing")],
            )
        return dict(value)
    raise GradientRequestInvalid(
        f"invalid request in item {index}: expected a string, a list of input items or a dict "
        f"with 'input', got {type(value).__name__}",
        [(f"item[{index}]", "wrong type")],
    )


class BatchInputs:
    """The items of one batch, as a re-iterable, lazily built sequence of :class:`BatchItem`.

    :param shared: request parameters every item gets (model, instructions, ...); an item's own
        keys override them.
    :param default_model: model used when neither ``shared`` nor the item names one.
    :param render: turns a row into the prompt text (``prompt_template`` rendered with the row).
    :param shard: only the items of this shard (positions and ``index`` stay those of the whole input).
    :param build_item: makes the item of a spec (``index, spec, digest``) instead of a ``/v1/responses``
        request; the embeddings batch gives one
        (:func:`~airflow_gradient.batch.in_task.embeddings.items.item_builder`).
    :param template_name: the argument that holds the template, as errors name it.
    """

    def __init__(
        self,
        *,
        inputs: Iterable[Any] | None = None,
        rows: Iterable[Mapping[str, Any]] | None = None,
        rows_path: ObjectStoragePath | None = None,
        render: Renderer | None = None,
        shared: Mapping[str, Any] | None = None,
        default_model: str | None = None,
        shard: Shard | None = None,
        build_item: Callable[[int, dict[str, Any], bool], BatchItem] | None = None,
        template_name: str = "prompt_template",
    ) -> None:
        given = [name for name, value in (("inputs", inputs), ("rows", rows), ("rows_path", rows_path))
                 if value is not None]
        if len(given) != 1:
            raise GradientRequestInvalid(
                f"invalid batch: give exactly one of inputs, rows or rows_path (got {given or 'none'})",
                [("inputs", "exactly one source")],
            )
        if (inputs is None) != (render is not None):
            raise GradientRequestInvalid(
                f"invalid batch: {template_name} goes with rows or rows_path, not with inputs",
                [(template_name, "needs rows or rows_path" if render is None else "not with inputs")],
            )
        if isinstance(inputs, (str, Mapping)) or isinstance(rows, (str, Mapping)):
            raise GradientRequestInvalid(
                "invalid batch: inputs and rows must be lists", [("inputs" if inputs else "rows", "not a list")]
            )
        self._inputs = inputs
        self._rows = rows
        self._rows_path = rows_path
        self._render = render
        self._shared = dict(shared or {})
        self._default_model = default_model
        self._shard = shard
        self._build_item = build_item
        self._template_name = template_name

    def _other_shard(self, custom_id: Any) -> bool:
        """True when an item's own id puts it in another shard: it is skipped before it is rendered."""
        if self._shard is None:
            return False
        explicit = _explicit_id(custom_id)
        return explicit is not None and not self._shard.owns(explicit)

    def _specs(self) -> Iterator[dict[str, Any] | None]:
        """Each item's spec, in input order; None for an item known to belong to another shard."""
        if self._inputs is not None:
            for index, value in enumerate(self._inputs):
                mine = not (isinstance(value, Mapping) and self._other_shard(value.get("custom_id")))
                yield _item_spec(value, index) if mine else None
            return
        assert self._render is not None
        rows = self._rows if self._rows is not None else self._file_rows()
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise GradientRequestInvalid(
                    f"invalid batch: rows[{index}]: not a mapping of column names to values, "
                    f"got {type(row).__name__}",
                    [(f"rows[{index}]", "not a mapping")],
                )
            if self._other_shard(row.get("custom_id")):
                yield None
                continue
            try:
                spec: dict[str, Any] = {"input": self._render(row)}
            except jinja2.TemplateError as exc:
                raise GradientRequestInvalid(
                    f"invalid batch: {self._template_name}: {type(exc).__name__}: {exc} (rendering row {index})",
                    [(self._template_name, str(exc))],
                ) from None
            if row.get("custom_id") not in (None, ""):
                spec["custom_id"] = row["custom_id"]
            yield spec

    def _file_rows(self) -> Iterator[Mapping[str, Any]]:
        assert self._rows_path is not None  # only read when the batch has a rows_path
        try:
            yield from iter_input_rows(self._rows_path)
        except OSError as exc:
            raise GradientRequestInvalid(
                f"invalid batch: rows_path: cannot read {self._rows_path}: {type(exc).__name__}: {exc}",
                [("rows_path", "unreadable")],
            ) from None

    def __iter__(self) -> Iterator[BatchItem]:
        return self._items(digest=True)

    def _items(self, *, digest: bool) -> Iterator[BatchItem]:
        for index, spec in enumerate(self._specs()):
            if spec is None:
                continue
            item = (self._build_item(index, spec, digest) if self._build_item is not None
                    else self._item(index, spec, digest=digest))
            if self._shard is None or self._shard.owns(item.custom_id):
                yield item

    def _item(self, index: int, spec: dict[str, Any], *, digest: bool = True) -> BatchItem:
        custom_id, where = take_custom_id(index, spec)
        params = {**self._shared, **spec}
        if params.get("model") is None and self._default_model:
            params["model"] = self._default_model
        params.pop("stream", None)
        # The default is filled in before building, so the digest is that of the request sent.
        request = require_model(build_request(params, where=where), None, where=where, field=f"item[{index}].model")
        wire = request.to_wire() if custom_id is None or digest else {}
        if custom_id is None:
            custom_id = custom_id_from_request(wire)
        # Validation does not need the digest, a third of the cost of building an item.
        return BatchItem(index, str(custom_id), request, estimate_tokens(request),
                         reuse_digest(wire) if digest else "")

    def validate(self, check: Callable[[BatchItem], None] | None = None) -> int:
        """Build every item once: raise on the first invalid one or duplicate id; return the count.

        :param check: also called with each item; it may raise ``GradientRequestInvalid``.
        """
        seen: set[int] = set()
        count = 0
        for item in self._items(digest=False):
            if check is not None:
                check(item)
            key = custom_id_key(item.custom_id)
            # Two different ids may share a 64-bit digest: a rescan tells a real duplicate.
            if key in seen and (first := next(o.index for o in self if o.custom_id == item.custom_id)) < item.index:
                raise GradientRequestInvalid(
                    f"invalid batch: items {first} and {item.index} have the same custom_id "
                    f"{item.custom_id!r}; ids must be unique (identical requests without a custom_id "
                    "hash to the same id: give each a custom_id, or drop the duplicates)",
                    [(f"item[{item.index}].custom_id", "duplicate")],
                )
            seen.add(key)
            count += 1
        return count
