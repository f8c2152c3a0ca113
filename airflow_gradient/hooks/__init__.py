"""Airflow hooks of the Gradient provider."""
