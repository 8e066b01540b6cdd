"""clr-sweep: the service's Python client and the contracts it shares with the API."""
