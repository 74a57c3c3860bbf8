"""Registry rows whose model runs on other OpenAI-compatible servers (``source_type``
``upstream``): the gateway forwards their requests, balances them over the servers'
base URLs, checks the servers' health and keeps the answers in our contract.

* :mod:`upstream.credentials`: the upstream API key, stored encrypted.
* :mod:`upstream.pool`: the servers of one row, their health, and the pooled client.
* :mod:`upstream.forward`: sending a request and normalising what comes back.
"""
