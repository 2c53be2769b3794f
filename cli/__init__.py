"""The ``rfmx`` command line (click): parse options, call the Python API, print."""
