"""Registry rows whose model runs on other OpenAI-compatible servers (``source_type``
``upstream``): the gateway forwards their requests, balances them over the servers'
base URLs, checks the servers' health and keeps the answers in our contract.

* :mod:`upstream.credentials`: the upstream API key, stored encrypted.
* :mod:`upstream.urlpolicy`: which addresses a row may point at (at save and on connect).
* :mod:`upstream.pool`: the servers of one row, their health, and the pooled client.
* :mod:`upstream.budget`: what a request reserves of its key's tokens per minute.
* :mod:`upstream.forward`: sending a request and normalising what comes back.
* :mod:`upstream.reading`: reading answers and streams within size bounds.
* :mod:`upstream.errors`: an upstream's errors as a client may see them.
"""
