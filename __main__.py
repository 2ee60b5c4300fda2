"""`python3 -m gravixd` run from the directory that holds this clone, itself named `gravixd`.

There Python takes the clone's folder (no `__init__.py`) for a namespace package named
`gravixd`, ahead of the installed package, and the real package's imports fail with
"cannot import name '__version__' from 'gravixd' (unknown location)". Python then runs this
file as `gravixd.__main__`: it drops that namespace package and runs the package of this
clone. Nowhere else is this file used (it is not part of the installed package).
"""

import os
import sys

_CLONE = os.path.dirname(os.path.abspath(__file__))
_SHADOWING = {os.getcwd(), os.path.dirname(_CLONE)}

for _name in [name for name in sys.modules if name == "gravixd" or name.startswith("gravixd.")]:
    if _name != "gravixd.__main__":
        del sys.modules[_name]
sys.path[:] = [_CLONE] + [p for p in sys.path if os.path.abspath(p or ".") not in _SHADOWING]

from gravixd.cli import main  # noqa: E402 - after the search path is repaired

sys.exit(main())
