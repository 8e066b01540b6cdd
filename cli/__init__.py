"""The ``clr-sweep`` command line (``cli.main:main``)."""
