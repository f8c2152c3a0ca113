"""Tests of :mod:`airflow_gradient.batch`: what both batch kinds share."""
