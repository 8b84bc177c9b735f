"""`python -m lamina.study ...`: the same as `lamina study ...`, a mistake as one line (exit 2)."""

import sys

from lamina.errors import ConfigError
from lamina.study import main

try:
    main(sys.argv[1:])
except ConfigError as err:
    print(f"lamina: error: {' '.join(str(err).split())}", file=sys.stderr)
    sys.exit(2)
except KeyboardInterrupt:
    print("lamina: interrupted", file=sys.stderr)
    sys.exit(130)
