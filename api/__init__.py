"""The REST API: a FastAPI app over the domain package ``sweep``.

Build it with :func:`api.app.create_app`; routes parse and authorise, call one
``sweep.services`` function and return what it gives back.
"""
