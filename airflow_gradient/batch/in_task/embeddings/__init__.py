"""Embeddings at batch scale: many texts packed into few ``POST /v1/embeddings`` requests.

- :mod:`~airflow_gradient.batch.in_task.embeddings.items`: a text as a batch item (its id, digest and
  token estimate), and packs of items under both per-request caps
- :mod:`~airflow_gradient.batch.in_task.embeddings.engine`: packs sent under the rate limiter, a pack
  refused for its content split until the offending text stands alone, one row per text
- :mod:`~airflow_gradient.batch.in_task.embeddings.runner`: one batch, from validation to manifest,
  through the shared :func:`~airflow_gradient.batch.in_task.runner.run_batch`

Inputs, rows, part files, resume, reuse, shards and ``read_results`` are those of every batch
(:mod:`airflow_gradient.batch`). See ``docs/embeddings.md``.
"""
