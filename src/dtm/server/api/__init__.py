"""Transport adapters: decode a request, call the service, encode the answer."""
