"""The supervisord runtime: miners as supervisord programs, driven over its XML-RPC API."""
