"""``python -m toonctl``."""

from toonctl.cli.app import main

main()
