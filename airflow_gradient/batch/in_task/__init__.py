"""The in-task batch engine: sending from the task itself, pacing, the run loop.

See :mod:`airflow_gradient.batch` for its modules.
"""
