"""``python -m threadline.server serve ...``: the same as the ``threadline`` console script."""

from .cli import main

main()
