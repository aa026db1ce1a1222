"""The operator console: the whole bus at a glance in a browser (``govbus console``).

Importing this package is cheap (settings only); the web stack loads with :func:`create_app`.
"""

from govbus.console._settings import ConsoleSettings

__all__ = ["ConsoleSettings"]
