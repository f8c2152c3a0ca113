"""What the emulator does: one pydantic model, settable from Python, HTTP and CLI flags alike."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]

ReplyShape = Literal["output", "choices", "both"]
Framing = Literal["typed", "chunk", "snapshot"]
QuotaHeaderNames = Literal["x-ratelimit", "ratelimit"]

# Probabilistic faults, in the order a random draw walks them (see faults.random_fault).
RANDOM_FAULT_FIELDS: dict[str, str] = {
    "rate_429": "429",
    "rate_429_reset_only": "429-reset",
    "rate_429_isolated": "429-isolated",
    "rate_429_isolated_bare": "429-isolated-bare",
    "rate_500": "500",
    "rate_503": "503",
    "rate_drop": "drop",
    "rate_hang": "hang",
    "rate_malformed": "malformed",
}


def _fraction(what: str) -> Any:
    return Field(0.0, description=f"fraction of /v1/responses requests {what}")


class EmulatorConfig(BaseModel):
    """How the emulator behaves. Every field is also a CLI flag (``--rate-500 0.1``) and a key of
    ``POST /_emulator/config``; :meth:`GradientEmulator.configure` changes fields while it runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_key: str | None = Field(None, description="the only Bearer key accepted (default: any non-empty key)")
    latency: Seconds = Field(0.0, description="seconds to wait before each reply")
    stream_delay: Seconds = Field(0.0, description="seconds to wait between stream frames")
    seed: int = Field(0, description="seed of the random fault draws")
    rate_429: Fraction = _fraction("answered 429 with Retry-After")
    rate_429_reset_only: Fraction = _fraction("answered 429 with only x-ratelimit-reset-* headers")
    rate_429_isolated: Fraction = _fraction(
        "answered an isolated 429 (an upstream refusal: quota left) with Retry-After"
    )
    rate_429_isolated_bare: Fraction = _fraction("answered an isolated 429 without Retry-After")
    rate_500: Fraction = _fraction("answered 500")
    rate_503: Fraction = _fraction("answered 503")
    rate_drop: Fraction = _fraction("whose connection is dropped mid-reply")
    rate_hang: Fraction = _fraction("left without a reply for hang_seconds")
    rate_malformed: Fraction = _fraction("answered 200 with invalid JSON")
    hang_seconds: Seconds = Field(30.0, description="how long a hanging request waits before it is dropped")
    fault_retry_after: Seconds = Field(
        1.0, description="Retry-After / reset delay (seconds) of the 429 faults; not the enforced limits"
    )
    rpm_limit: Annotated[int, Field(ge=1)] | None = Field(None, description="requests per sliding minute")
    tpm_limit: Annotated[int, Field(ge=1)] | None = Field(None, description="tokens per sliding minute")
    limit_retry_after: bool = Field(True, description="send Retry-After on 429s from the enforced limits")
    limit_window: Annotated[float, Field(gt=0.0, le=60.0)] = Field(
        60.0, description="seconds of the sliding window the enforced limits count over; rpm_limit and tpm_limit "
        "are scaled to it (1 with rpm_limit 300: 5 requests per second)"
    )
    quota_headers: bool = Field(
        True, description="send the x-ratelimit-* quota headers; off: none on any reply, as behind a gateway "
        "that strips them"
    )
    quota_header_names: QuotaHeaderNames = Field(
        "x-ratelimit", description="x-ratelimit: x-ratelimit-{limit,remaining,reset}-{requests,tokens}; ratelimit: "
        "only ratelimit-limit (requests per window), ratelimit-remaining and ratelimit-reset (epoch seconds), "
        "as DigitalOcean's API specification declares them"
    )
    reply_shape: ReplyShape = Field("output", description="where non-streamed text goes: output, choices or both")
    stream_framing: Framing = Field("typed", description="SSE framing of stream=true replies")
    stream_cut_after: Annotated[int, Field(ge=0)] | None = Field(
        None, description="end streams after N frames, without a terminal event"
    )
    stream_error_after: Annotated[int, Field(ge=0)] | None = Field(
        None, description="send an error frame after N frames, then end the stream"
    )
    # /v1/embeddings (testing/emulator/embeddings.py)
    embedding_dimensions: Annotated[int, Field(ge=1, le=65536)] = Field(
        256, description="length of the vectors /v1/embeddings returns"
    )
    embedding_max_inputs: Annotated[int, Field(ge=1)] = Field(
        2048, description="most texts one /v1/embeddings request may hold; more are refused with 413"
    )
    embedding_context_tokens: Annotated[int, Field(ge=1)] = Field(
        8192, description="a text longer than this many tokens (words) is refused with 400, naming its index"
    )

    @model_validator(mode="after")
    def _fractions_fit(self) -> EmulatorConfig:
        total = sum(getattr(self, name) for name in RANDOM_FAULT_FIELDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"the rate_* fault fractions add up to {total:g}, more than 1")
        return self

    def updated(self, **fields: object) -> EmulatorConfig:
        """A validated copy with ``fields`` changed; unknown names raise ``ValidationError``."""
        return EmulatorConfig.model_validate({**self.model_dump(), **fields})
