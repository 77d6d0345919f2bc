"""Tools.

The ``faststream-callout`` command, doctor, and reading and rendering nats-server configs.
"""
