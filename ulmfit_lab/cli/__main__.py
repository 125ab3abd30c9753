"""`python -m ulmfit_lab.cli`, the same as the `ulmfit-lab` command."""

from . import main

raise SystemExit(main())
