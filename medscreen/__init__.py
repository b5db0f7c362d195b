"""The composition root of medscreen: the app factory, ``serve`` and the CLI, composed from every package.

Nothing imports this package; it imports the platform (``service``) and the domain packages.
"""

# The release when the installed package's metadata cannot be read (a source tree run without `pip install -e .`);
# kept equal to pyproject.toml's version by tests/medscreen/test_cli_signals_and_version.py.
__version__ = "0.1.0"
