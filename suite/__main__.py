from suite.cli import _console

_console()
