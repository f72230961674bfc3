import sys

from kexp.cli import main

sys.exit(main())
