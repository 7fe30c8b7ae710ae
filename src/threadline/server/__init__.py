"""``threadline serve``: stateless graph servers that speak the LangGraph Agent Server API.

Every replica holds no conversation state: threads, runs (the queue) and run events live in the
database, so any replica serves any request. Needs the ``server`` extra.
"""
