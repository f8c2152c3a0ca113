"""Gradient for Airflow's common.ai provider: the transport that puts Pydantic AI's requests on this
provider's HTTP path (pacing, retries, key scrubbing, usage and cost). The hook itself,
``PydanticAIGradientHook``, is in :mod:`airflow_gradient.hooks.pydantic_ai` (it needs common.ai);
see ``docs/common-ai.md``."""
