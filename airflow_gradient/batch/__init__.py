"""Batches of ``/v1/responses`` calls: sent from the task itself, or as provider-side Batch
Inference jobs. Both read the same inputs and write the same rows, part files and manifest.

What both kinds share, in the order data flows:

- :mod:`~airflow_gradient.batch.inputs`: items from lists, rows or a file; validation; ``custom_id``
- :mod:`~airflow_gradient.batch.attempt`: one attempt, from validation (the XCom cap) to the manifest
- :mod:`~airflow_gradient.batch.rows`: the row of one item, its builders, its usage keys, its encoding
- :mod:`~airflow_gradient.batch.progress`: counters and the progress line
- :mod:`~airflow_gradient.batch.parts`: part files: their names, the one lister (shard folders
  included) and the one reader
- :mod:`~airflow_gradient.batch.results`: writing part files, resume, the manifest
- :mod:`~airflow_gradient.batch.reuse`: rows copied from earlier runs (``reuse_results_from``)
- :mod:`~airflow_gradient.batch.reader`: reading results back downstream

The in-task engine, :mod:`airflow_gradient.batch.in_task`:

- :mod:`~airflow_gradient.batch.in_task.pacing`: the rate limiter interface, the pacing rules (a pure
  state), the in-memory limiter, the limiter shared through Redis, and :func:`limiter_for`
- :mod:`~airflow_gradient.batch.in_task.engine`: concurrent sending, budget, one row per item
- :mod:`~airflow_gradient.batch.in_task.runner`: one in-task batch from validation to manifest

Provider-side Batch Inference jobs, :mod:`airflow_gradient.batch.jobs`:

- :mod:`~airflow_gradient.batch.jobs.files`: the JSONL input files a job reads
- :mod:`~airflow_gradient.batch.jobs.ledger`: which jobs a task submitted, so a retry does not
  submit them again
- :mod:`~airflow_gradient.batch.jobs.watch`: polling jobs until they end (shared with the trigger)
- :mod:`~airflow_gradient.batch.jobs.output`: a job's result lines as rows
- :mod:`~airflow_gradient.batch.jobs.runner`: submit, wait, land the results

Neither subpackage imports the other: what they share lives here. This package exports nothing:
the public names are in :mod:`airflow_gradient` (its ``__all__``); the rest is the engine's own.
"""
