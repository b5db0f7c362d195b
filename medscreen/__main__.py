import sys

from medscreen.cli import main

sys.exit(main())
