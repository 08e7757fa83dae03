import sys

from moebox.cli import main

sys.exit(main())
