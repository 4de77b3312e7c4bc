"""`python -m ccfm` runs the same typer app as the `ccfm` console script."""

from cli import app

if __name__ == "__main__":
    app()
