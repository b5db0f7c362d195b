"""``python -m service`` is an old spelling of ``python -m medscreen``, kept so older scripts still start."""

import runpy

# Forwarded by module name, so the platform does not import the composition root.
runpy.run_module("medscreen", run_name="__main__", alter_sys=True)
