import sys

from insitu.gen.cli import main

sys.exit(main())
