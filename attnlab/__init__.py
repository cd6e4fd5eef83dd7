"""attnlab: attention as a programmable, inspectable, fast component."""

__version__ = "0.1.0"
