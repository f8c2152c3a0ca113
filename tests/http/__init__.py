"""Tests of airflow_gradient.http: settings, one attempt, replies, errors, retries, wait hints, streams."""
