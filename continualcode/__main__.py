"""`python -m continualcode` is the `continualcode` command."""

from continualcode.cli import main

raise SystemExit(main())
