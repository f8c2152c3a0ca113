"""Everything between a hook and the socket.

One job per module, in the order a request meets them:

- :mod:`~airflow_gradient.http.settings`: a connection's settings as a value (``GradientSettings``).
- :mod:`~airflow_gradient.http.clients`: the pooled httpx clients a hook sends through.
- :mod:`~airflow_gradient.http.attempt`: ONE attempt (sync or async): send under the attempt's
  time limit, read the body, scrub the key, name a transport failure.
- :mod:`~airflow_gradient.http.scrub`: the model access key kept out of whatever the server sent.
- :mod:`~airflow_gradient.http.replies`: a reply, read whole, to our values or our errors.
- :mod:`~airflow_gradient.http.errors`: an HTTP error reply to a typed error.
- :mod:`~airflow_gradient.http.transport_errors`: what a transport failure really was.
- :mod:`~airflow_gradient.http.retry`: what is retried, and how long to wait between tries.
- :mod:`~airflow_gradient.http.wait_hints`: the one reading of a server's wait hints.
- :mod:`~airflow_gradient.http.streams`: server-sent frames to events and a final result.

Nothing here is public API: the public names are in :mod:`airflow_gradient`.
"""
