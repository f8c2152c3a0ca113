"""The names this provider puts on spans and metrics: one module, so a name is spelt once.

The ``gen_ai.*``, ``server.*``, ``http.*`` and ``error.*`` names are those of the OpenTelemetry
semantic conventions v1.41.0 (GenAI spans and metrics, status "Development"); see
``docs/observability.md``. The ``gradient.*`` and ``airflow.*`` names are this provider's own.
"""

from __future__ import annotations

SEMCONV_VERSION = "1.41.0"
INSTRUMENTATION_NAME = "airflow_gradient"

# -- GenAI spans (semconv v1.41.0, docs/gen-ai/gen-ai-spans.md) ------------------------------------
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"
OUTPUT_TYPE = "gen_ai.output.type"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
# Content: recorded only with capture_content=True, as JSON strings (structured attributes are
# not yet supported on spans, so the conventions ask for their JSON serialisation).
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_STATUS_CODE = "http.response.status_code"
HTTP_RESEND_COUNT = "http.request.resend_count"
HTTP_METHOD = "http.request.method"
ERROR_TYPE = "error.type"

# Well-known values.
PROVIDER = "digitalocean"
OP_CHAT = "chat"
OP_EMBEDDINGS = "embeddings"
# The Batch Inference endpoints have no GenAI operation of their own: custom values, as allowed.
OP_BATCH_FILE = "gradient.batch_file"
OP_BATCH_JOB = "gradient.batch_job"

# -- GenAI metrics (semconv v1.41.0, docs/gen-ai/gen-ai-metrics.md) ---------------------------------
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
METRIC_TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
TOKEN_TYPE = "gen_ai.token.type"
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

# -- this provider's own ----------------------------------------------------------------------------
METRIC_COST = "gradient.client.cost"
METRIC_RATE_LIMITED = "gradient.client.rate_limited"
COST_USD = "gradient.cost_usd"
CUSTOM_ID = "gradient.custom_id"
RATE_LIMIT_WAIT_S = "gradient.rate_limit.wait_s"
RETRY_AFTER_S = "gradient.rate_limit.retry_after_s"
PACING_SOURCE = "gradient.pacing.source"
BATCH_ID = "gradient.batch_job.id"
# Airflow's own task span names these the same way (airflow.sdk.execution_time.task_runner).
DAG_ID = "airflow.dag_id"
TASK_ID = "airflow.task_id"

# The batch span: "gradient.batch {task_id}", INTERNAL.
BATCH_SPAN_PREFIX = "gradient.batch"
BATCH_TOTAL = "gradient.batch.total"
BATCH_SUCCEEDED = "gradient.batch.succeeded"
BATCH_FAILED = "gradient.batch.failed"
BATCH_SKIPPED = "gradient.batch.skipped"
BATCH_RESUMED = "gradient.batch.resumed"
BATCH_REUSED = "gradient.batch.reused"
BATCH_INPUT_TOKENS = "gradient.batch.usage.input_tokens"
BATCH_OUTPUT_TOKENS = "gradient.batch.usage.output_tokens"
BATCH_CACHED_TOKENS = "gradient.batch.usage.cached_tokens"
BATCH_REASONING_TOKENS = "gradient.batch.usage.reasoning_tokens"
BATCH_COST_USD = "gradient.batch.cost_usd"
BATCH_REQUESTS = "gradient.batch.requests"
BATCH_RETRIES = "gradient.batch.retries"
BATCH_RATE_LIMITED = "gradient.batch.rate_limited"
BATCH_PACE_RPM = "gradient.batch.pace.requests_per_minute"
BATCH_PACE_TPM = "gradient.batch.pace.tokens_per_minute"
BATCH_PACE_SOURCE = "gradient.batch.pace.source"
BATCH_JOB_IDS = "gradient.batch.job_ids"
BATCH_DEFERRED = "gradient.batch.deferred"
# The event on the batch span when pacing decides to wait.
PACING_WAIT_EVENT = "gradient.pacing.wait"
PACING_WAIT_S = "gradient.pacing.wait_s"
PACING_REASON = "gradient.pacing.reason"

TRACING_MODES = ("items", "batch", "off")
