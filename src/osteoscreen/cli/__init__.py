"""The command line (README "Command-line tour"), the top layer with the web page: `entry.main` runs a command,
`parser.build_parser` declares them, `commands` holds one `cmd_*` function per command and `options` the flags
several share, read into the library's configurations."""

from osteoscreen.cli.entry import main

__all__ = ["main"]
