"""Tests of :mod:`airflow_gradient.batch.in_task`: the in-task engine."""
