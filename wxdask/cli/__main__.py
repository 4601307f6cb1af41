"""``python -m wxdask.cli``: the ``wxdask`` command."""

from wxdask.cli import main

main()
