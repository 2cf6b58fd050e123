import sys

from textlora.cli import main

sys.exit(main())
