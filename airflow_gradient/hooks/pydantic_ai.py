"""PydanticAIGradientHook: the ``pydanticai_gradient`` connection of Airflow's common.ai provider.

``@task.llm``, ``@task.agent`` and the other common.ai operators resolve their model from the
connection named by ``llm_conn_id``; with this connection type the model is a Pydantic AI OpenAI
chat model whose every request goes through :class:`~airflow_gradient.hooks.gradient.GradientHook`
(see :mod:`airflow_gradient.common_ai.transport`). Importable only where common.ai is installed;
the provider registers the connection type only there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from airflow.exceptions import AirflowOptionalProviderFeatureException
from airflow_gradient.batch.in_task.pacing.factory import limiter_for
from airflow_gradient.common_ai.transport import GradientTransport
from airflow_gradient.exceptions import GradientConfigError
from airflow_gradient.hooks.gradient import GradientHook
from airflow_gradient.http.settings import GradientSettings
from airflow_gradient.pricing import Prices

try:
    from openai import AsyncOpenAI

    from airflow.providers.common.ai.hooks.pydantic_ai import PydanticAIHook
except ImportError as exc:  # pragma: no cover - exercised by the test that hides common.ai
    raise AirflowOptionalProviderFeatureException(
        f"the pydanticai_gradient connection needs apache-airflow-providers-common-ai and openai "
        f"(pip install 'airflow-gradient[common-ai]'): {exc}"
    ) from exc

# The SDK insists on a key; the hook's client sends the real one, so it never reaches the SDK.
_KEY_SENT_BY_HOOK = "sent-by-airflow-gradient"


class PydanticAIGradientHook(PydanticAIHook):
    """Pydantic AI models on DigitalOcean Gradient, through this provider's HTTP path.

    The connection has the fields of the ``gradient`` connection: the model access key in the
    password, the base URL in the host (default ``https://inference.do-ai.run/v1``), and the
    extras ``model`` (a bare model id such as ``llama3.3-70b-instruct``: no ``openai:`` prefix
    needed), ``prices``, ``rate_limit_store``, ``timeout``, ``max_retries`` and the others. Or it
    names an existing ``gradient`` connection in its ``gradient_conn_id`` extra and borrows its key,
    URL and settings; its own ``model``, ``prices`` and ``rate_limit_store`` win where set.

    :param llm_conn_id: the ``pydanticai_gradient`` connection.
    :param model_id: the model, overriding the connection's ``model`` extra.
    :param fallback_conn_ids: see common.ai's ``PydanticAIHook``.
    :param gradient_conn_id: a ``gradient`` connection to borrow, overriding the extra of that name.
    """

    conn_type = "pydanticai_gradient"
    default_conn_name = "pydanticai_gradient_default"
    hook_name = "Pydantic AI (DigitalOcean Gradient)"
    # A bare model id is qualified as "openai-chat:<id>": Pydantic AI's Chat Completions model.
    model_provider = "openai-chat"

    def __init__(
        self,
        llm_conn_id: str | None = None,
        model_id: str | None = None,
        fallback_conn_ids: list[str] | None = None,
        *,
        gradient_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(llm_conn_id, model_id, fallback_conn_ids, **kwargs)
        self.gradient_conn_id = gradient_conn_id
        self._gradient_settings: GradientSettings | None = None
        self.transport: GradientTransport | None = None

    @staticmethod
    def get_ui_field_behaviour() -> dict[str, Any]:
        """The form of the ``gradient`` connection (its one owner is ``get_provider_info``)."""
        return GradientHook.get_ui_field_behaviour()

    @property
    def settings(self) -> GradientSettings:
        """The Gradient settings this connection stands for, read once (the key masked)."""
        if self._gradient_settings is None:
            conn, extra = self._get_conn_and_extra()
            borrowed = self.gradient_conn_id or extra.get("gradient_conn_id")
            if not borrowed:
                self._gradient_settings = GradientSettings.from_connection(self.llm_conn_id, conn)
            else:
                lent = GradientSettings.from_connection(borrowed, self._borrowed_connection(str(borrowed)))
                own = {name: extra[name] for name in ("prices", "rate_limit_store") if extra.get(name)}
                self._gradient_settings = dataclasses.replace(
                    lent, default_model=extra.get("model") or lent.default_model, **own
                )
        return self._gradient_settings

    def _borrowed_connection(self, conn_id: str) -> Any:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(conn_id)
        except AirflowNotFoundException:
            raise GradientConfigError(
                f"Airflow connection {self.llm_conn_id!r} borrows gradient_conn_id {conn_id!r}, "
                "which is not an Airflow connection"
            ) from None
        # Another type's password and host (a database's, say) would otherwise be sent to Gradient
        # as a model access key and a base URL.
        if conn.conn_type != GradientHook.conn_type:
            raise GradientConfigError(
                f"Airflow connection {self.llm_conn_id!r} borrows gradient_conn_id {conn_id!r}, "
                f"which is a {conn.conn_type!r} connection: it must be a {GradientHook.conn_type!r} connection"
            )
        return conn

    # The two overrides below are of private methods: common.ai 1.0 has no public override point
    # that its fallback chains also go through (they resolve each fallback connection with the
    # private _resolve_own_model, never get_conn, and it calls these two; its docstrings tell
    # subclasses to override _get_provider_kwargs). tests/common_ai/test_overrides.py fails,
    # naming the method, if common.ai renames either or changes its parameters.

    def _get_configured_model_name(self) -> str | None:
        # Also the borrowed gradient connection's model, when this connection names none.
        name = super()._get_configured_model_name()
        return str(name) if name else self.settings.default_model

    def _get_provider_kwargs(self, api_key: str | None, base_url: str | None, extra: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI client whose requests go through :class:`GradientHook` (and never retry by
        themselves: the hook's policy does)."""
        settings = self.settings
        hook = GradientHook(settings=settings)
        prices = Prices.parse(settings.prices)
        self.transport = GradientTransport(hook, limiter_for(None, settings), prices)
        client = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=_KEY_SENT_BY_HOOK,
            max_retries=0,
            # openai 2+ types this as httpx2's client but takes httpx's as well ("legacy"); httpx's
            # works with every openai release the extra allows, and is what the hook speaks.
            http_client=httpx.AsyncClient(transport=self.transport, base_url=settings.base_url),  # type: ignore[arg-type]
        )
        return {"openai_client": client}

    def test_connection(self) -> tuple[bool, str]:
        """Resolve the model (common.ai's check), then check the key and URL with ``GET /v1/models``,
        which bills nothing; never raises, never shows the key."""
        ok, message = super().test_connection()
        if not ok:
            return ok, message
        try:
            return GradientHook(settings=self.settings).test_connection()
        except Exception as exc:  # the UI wants a reason, not a traceback
            return False, f"{type(exc).__name__}: {exc}"

