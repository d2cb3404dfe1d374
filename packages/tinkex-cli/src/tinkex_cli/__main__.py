"""``python -m tinkex_cli``."""

from tinkex_cli._app import main

main()
