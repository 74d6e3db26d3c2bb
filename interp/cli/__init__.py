"""The ``interp`` command (typer). Heavy libraries load inside the commands, so ``interp --help``
answers at once."""

from interp.cli._commands import app


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
