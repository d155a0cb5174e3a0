"""The ``bpfleet`` command: thin commands over the other packages."""
