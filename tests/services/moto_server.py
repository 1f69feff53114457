"""`python -m moto.server`, less the work moto repeats for every request that never changes.

moto's dispatcher lists its own package folder (a listdir and some 200 isdir calls) on every
request to find which service a host names: an eighth of the server's CPU, and moto is the
suite's largest CPU consumer. The listing is taken once here; the server is otherwise moto's
own, unchanged (every S3 call it answers is its real implementation).

    python tests/services/moto_server.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

from moto import backends
from moto.server import main

_MODULES = tuple(backends.list_of_moto_modules())
backends.list_of_moto_modules = lambda: _MODULES

if __name__ == "__main__":
    main()
