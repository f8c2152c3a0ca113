"""The Gradient pages of the Airflow UI (docs/ui.md).

- :mod:`~airflow_gradient.plugins.plugin`: the ``AirflowPlugin`` the provider registers.
- :mod:`~airflow_gradient.plugins.app`: the FastAPI app (routes, authentication).
- :mod:`~airflow_gradient.plugins.records`: what is read from the metadata database.
- :mod:`~airflow_gradient.plugins.summary`: the figures added up (pure).
- :mod:`~airflow_gradient.plugins.pages` and :mod:`~airflow_gradient.plugins.svg`: HTML and charts (pure).
"""
