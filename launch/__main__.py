import sys

from brainxl.launch.cli import main

sys.exit(main())
