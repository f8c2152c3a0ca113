"""Airflow triggers of the Gradient provider."""
