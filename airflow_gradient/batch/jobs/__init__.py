"""Provider-side Batch Inference jobs: input files, submission ledger, watching, results.

See :mod:`airflow_gradient.batch` for its modules.
"""
