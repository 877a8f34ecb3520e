"""Optional integrations with other tools.

Each module here needs an extra of its own, and importing it without that extra raises an
``ImportError`` naming the ``pip install`` that provides it:

- :mod:`sa_river.contrib.prometheus`: Prometheus metrics (``pip install 'sa_river[prometheus]'``).

Nothing imports these modules unless you do (or pass the CLI option that needs them).
"""
