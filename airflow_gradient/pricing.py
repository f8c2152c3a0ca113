"""Money: the prices a user configures, what a reply cost, and the dollar budget of a batch.

Prices are never built in: they come from the operator argument ``prices`` or, when it is not
given, from the Gradient connection's extra of the same name, in US dollars per million tokens::

    {"llama3.3-70b-instruct": {"input": 0.65, "cached_input": 0.3, "output": 0.65,
                               "batch_discount": 0.5}}

- ``input`` and ``output`` are required; ``cached_input`` (the price of cached input tokens)
  defaults to ``input``;
- ``batch_discount`` (a fraction from 0 to 1, default 0) is taken off the cost of requests run
  by a Batch Inference job (:class:`~airflow_gradient.GradientBatchJobOperator`), as your
  contract or DigitalOcean's price list says; it never applies to in-task batches.

Cached tokens are part of ``input_tokens``, as in the usage the API returns, so a reply costs::

    ((input - cached) * input_price + cached * cached_input_price + output * output_price) / 1e6

A model without a price has an unknown cost: ``None``, never zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_gradient.exceptions import GradientRequestInvalid

PER_TOKENS = 1_000_000
PRICE_KEYS = ("input", "cached_input", "output", "batch_discount")
# Sums of many small floats: a row's cost is kept to a billionth of a dollar.
COST_DECIMALS = 9


@dataclass(frozen=True)
class ModelPrice:
    """The price of one model, US dollars per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    batch_discount: float = 0.0

    def cost_usd(self, usage: Mapping[str, Any], *, batch: bool = False) -> float:
        """What ``usage`` (a row's or an XCom's ``usage`` dict) cost."""
        tokens_in = int(usage.get("input_tokens") or 0)
        cached = min(int(usage.get("cached_tokens") or 0), tokens_in)
        cached_price = self.input if self.cached_input is None else self.cached_input
        cost = ((tokens_in - cached) * self.input + cached * cached_price
                + int(usage.get("output_tokens") or 0) * self.output) / PER_TOKENS
        if batch:
            cost *= 1.0 - self.batch_discount
        return round(cost, COST_DECIMALS)

    def estimate_usd(self, input_tokens: int, output_tokens: int, *, batch: bool = False) -> float:
        """An upper estimate before sending: no input counted as cached."""
        return self.cost_usd({"input_tokens": input_tokens, "output_tokens": output_tokens}, batch=batch)


def _invalid(message: str, field_name: str) -> GradientRequestInvalid:
    return GradientRequestInvalid(f"invalid prices: {message}", [(field_name, message)])


def _number(model: str, key: str, value: Any, *, upper: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= upper:
        allowed = "a number from 0 to 1" if upper == 1 else "a non-negative finite number"
        raise _invalid(f"model {model!r}: {key}: must be {allowed} (got {value!r})", f"prices.{model}.{key}")
    return float(value)


@dataclass(frozen=True)
class Prices:
    """Prices per model id; see the module docstring for the shape and the cost rule."""

    models: Mapping[str, ModelPrice] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Mapping[str, Any] | str | Prices | None) -> Prices | None:
        """Validate a ``prices`` value (a dict, or its JSON text as a connection form may store it).

        Raises :class:`~airflow_gradient.exceptions.GradientRequestInvalid` naming ``prices``, the
        model and the key.
        """
        if value is None or isinstance(value, Prices):
            return value
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise _invalid(f"not JSON ({exc})", "prices") from None
        if not isinstance(value, Mapping):
            raise _invalid(f"must be a dict of model id to prices, got {type(value).__name__}", "prices")
        models: dict[str, ModelPrice] = {}
        for model, entry in value.items():
            if not isinstance(entry, Mapping):
                raise _invalid(f"model {model!r}: must be a dict with input and output prices, "
                               f"got {type(entry).__name__}", f"prices.{model}")
            unknown = sorted(set(entry) - set(PRICE_KEYS))
            if unknown:
                raise _invalid(f"model {model!r}: unknown key(s) {unknown}; allowed: {list(PRICE_KEYS)}",
                               f"prices.{model}")
            for key in ("input", "output"):
                if key not in entry:
                    raise _invalid(f"model {model!r}: {key}: missing (US dollars per million tokens)",
                                   f"prices.{model}.{key}")
            cached = entry.get("cached_input")
            models[str(model)] = ModelPrice(
                input=_number(model, "input", entry["input"]),
                output=_number(model, "output", entry["output"]),
                cached_input=None if cached is None else _number(model, "cached_input", cached),
                batch_discount=_number(model, "batch_discount", entry.get("batch_discount", 0), upper=1),
            )
        return cls(models)

    def of(self, *models: str | None) -> ModelPrice | None:
        """The price of the first of ``models`` that has one (a reply's model, then the request's)."""
        for model in models:
            if model is not None and model in self.models:
                return self.models[model]
        return None


def resolve_prices(argument: Mapping[str, Any] | str | Prices | None, connection_extra: Any) -> Prices | None:
    """The prices in force: the operator argument when given, else the connection's extra."""
    return Prices.parse(argument if argument is not None else connection_extra)


def cost_usd(
    usage: Mapping[str, Any] | None, model: str | None, prices: Prices | None, *,
    request_model: str | None = None, batch: bool = False,
) -> float | None:
    """What ``usage`` cost at ``prices``, or None when unknown (no usage, or no price for the model).

    ``model`` is the reply's model; ``request_model`` the one asked for, tried second (a reply may
    name a dated version). ``batch`` applies the model's ``batch_discount``.
    """
    if usage is None or prices is None:
        return None
    price = prices.of(model, request_model)
    return None if price is None else price.cost_usd(usage, batch=batch)


@dataclass
class Spend:
    """Dollars summed over rows: ``cost_usd`` of those priced, and how many had usage but no price."""

    priced_usd: float = 0.0
    unpriced: int = 0

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Count a row's ``cost_usd``; a row with usage and no cost makes the total unknown."""
        cost = row.get("cost_usd")
        if cost is not None:
            self.priced_usd += cost
        elif row.get("usage"):
            self.unpriced += 1

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.priced_usd + other.priced_usd, self.unpriced + other.unpriced)

    @property
    def cost_usd(self) -> float | None:
        """The total, or None when any row's price was unknown."""
        return None if self.unpriced else round(self.priced_usd, COST_DECIMALS)

    def describe(self) -> str:
        """For the progress line: ``$0.0123``, or ``cost unknown``."""
        return f"${self.priced_usd:,.4f}" if not self.unpriced else "cost unknown"


@dataclass
class SpendByModel:
    """Tokens and dollars per model that answered: a batch manifest's ``models`` (the UI's
    breakdown by model). A row counts under its ``model`` (``"unknown"`` when it has none)."""

    spend: dict[str, Spend] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)

    def add_row(self, row: Mapping[str, Any], *, tokens: bool = True) -> None:
        """Count a row with usage: its cost, and its tokens unless ``tokens`` is False (a row
        whose tokens the manifest's ``usage`` leaves out, as it does an earlier try's failed rows)."""
        usage = row.get("usage")
        if not usage:
            return
        model = str(row.get("model") or "unknown")
        self.spend.setdefault(model, Spend()).add_row(row)
        self.tokens[model] = self.tokens.get(model, 0) + (usage.get("total_tokens", 0) if tokens else 0)

    def __add__(self, other: SpendByModel) -> SpendByModel:
        models = self.spend.keys() | other.spend.keys()
        return SpendByModel({m: self.spend.get(m, Spend()) + other.spend.get(m, Spend()) for m in models},
                            {m: self.tokens.get(m, 0) + other.tokens.get(m, 0) for m in models})

    def manifest(self) -> dict[str, dict[str, Any]]:
        """``{model: {total_tokens, cost_usd}}``, a cost None when a row of that model had no price."""
        return {model: {"total_tokens": self.tokens.get(model, 0), "cost_usd": spend.cost_usd}
                for model, spend in sorted(self.spend.items())}


def require_prices_for_budget(max_cost_usd: float | None, prices: Prices | None, model: str | None) -> None:
    """``max_cost_usd`` cannot be enforced for a model without a price: refuse before sending."""
    if max_cost_usd is None:
        return
    if prices is None or prices.of(model) is None:
        raise GradientRequestInvalid(
            f"invalid batch: max_cost_usd={max_cost_usd} needs a price for model {model!r}: add it to prices "
            "(the operator argument, or the 'prices' extra of the connection)",
            [("max_cost_usd", f"no price for model {model!r}")],
        )


@dataclass(frozen=True)
class Costing:
    """How a batch prices its rows: the prices in force, and whether Batch Inference runs them."""

    prices: Prices | None = None
    batch: bool = False

    def stamp(self, row: dict[str, Any], request_model: str | None = None) -> dict[str, Any]:
        """Set the row's ``cost_usd`` when its price is known; drop it otherwise (a reused row
        copied from a run with other prices): a row shows no cost rather than a wrong one."""
        cost = cost_usd(row.get("usage"), row.get("model"), self.prices, request_model=request_model,
                        batch=self.batch)
        if cost is None:
            row.pop("cost_usd", None)
        else:
            row["cost_usd"] = cost
        return row


class CostBudget:
    """``max_cost_usd`` of a batch: an item is admitted while what earlier tries spent, what this
    one spent and the estimates of the items in flight, plus its own estimate, stay within it.
    Once an item does not fit, no later item is admitted (as with ``max_total_tokens``)."""

    def __init__(self, limit: float, costing: Costing, *, spent_before: float = 0.0) -> None:
        self.limit = limit
        self.costing = costing
        self.spent_before = spent_before
        self.reached = False
        self._in_flight: dict[int, float] = {}

    @property
    def reason(self) -> str:
        return f"cost budget max_cost_usd={self.limit:g} reached"

    def estimate(self, model: str | None, input_tokens: int, output_tokens: int) -> float:
        price = self.costing.prices.of(model) if self.costing.prices is not None else None
        if price is None:  # refused before sending (require_prices_for_budget); never admit blindly
            return math.inf
        return price.estimate_usd(input_tokens, output_tokens, batch=self.costing.batch)

    def admit(self, key: int, estimate: float, spent: float) -> bool:
        """Whether an item estimated at ``estimate`` dollars may be sent now; ``spent`` is what this
        try's finished rows cost. An admitted item is :meth:`release`\\ d when its row is written."""
        if not self.reached:
            used = self.spent_before + spent + sum(self._in_flight.values())
            if used + estimate > self.limit:
                self.reached = True
            else:
                self._in_flight[key] = estimate
        return not self.reached

    def release(self, key: int) -> None:
        self._in_flight.pop(key, None)
