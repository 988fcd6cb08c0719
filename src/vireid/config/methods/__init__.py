"""One schema module per built-in method, named as the method (``method.name``).

:func:`vireid.config.get_method_schema` finds a method's schema here by its
name, so that a config is validated without importing torch or the method.
"""
