"""Airflow operators of the Gradient provider."""
