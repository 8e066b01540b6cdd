"""The REST API: a FastAPI app over the domain package ``core``.

Build it with :func:`api.app.create_app`; routes parse and authorise, call one
``core.services`` function and return what it gives back.
"""
