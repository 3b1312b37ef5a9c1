"""The ``residual-detectron`` command line."""
