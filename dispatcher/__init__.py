"""dispatcher: run jobs for other services and return their results durably."""

from dispatcher.handlers import Retry, handler

__version__ = "0.1.0"
__all__ = ["Retry", "__version__", "handler"]
